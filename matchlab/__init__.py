"""matchlab: local feature matching, retrieval and SfM glue.

    from matchlab import load_extractor, load_matcher
    extractor = load_extractor("superpoint", max_keypoints=1024)
    matches = load_matcher("nn")(extractor("a.jpg"), extractor("b.jpg"))
"""
from .images import ImageError, read_image
from .registry import ConfigError, load_extractor, load_matcher
from .types import Features, Matches, ShapeError

__all__ = ["Features", "Matches", "ImageError", "ShapeError", "ConfigError", "read_image",
           "load_extractor", "load_matcher"]
__version__ = "0.1.0"
