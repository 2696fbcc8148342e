"""Local feature extractors; construct them by name with `matchlab.load_extractor`."""
