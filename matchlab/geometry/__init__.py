"""matchlab.geometry"""
