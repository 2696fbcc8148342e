"""matchlab.evaluation"""
