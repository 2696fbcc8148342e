"""matchlab.matchers"""
