"""Local feature extractors; construct them by name with `matchlab.load_extractor`."""

# Keypoints kept per image by `matchlab extract` and `matchlab sfm` (`SfMConfig`) unless
# told otherwise; the extractor classes' own default (`max_keypoints` in their conf) is
# what the Python API uses.
DEFAULT_MAX_KEYPOINTS = 4096
