"""matchlab.sfm"""
