"""matchlab.retrieval"""
