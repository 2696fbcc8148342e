"""matchlab: local feature matching, retrieval and SfM glue.

    from matchlab import load_extractor, load_matcher
    extractor = load_extractor("superpoint", max_keypoints=1024)
    matches = load_matcher("nn")(extractor("a.jpg"), extractor("b.jpg"))

`import matchlab` is light: torch, cv2 and the models load when one of the names below is
first used (the error classes are plain Python and load at once).
"""
from __future__ import annotations

from importlib import import_module

from .errors import ConfigError, ImageError, MatchlabError, ShapeError

__version__ = "0.1.0"

# name -> module that defines it, imported on first access
_LAZY = {
    "Features": ".types",
    "Matches": ".types",
    "TwoViewGeometry": ".types",
    "Extractor": ".extractors.base",
    "Matcher": ".matchers.base",
    "MatcherCapabilities": ".matchers.base",
    "read_image": ".images",
    "load_extractor": ".registry",
    "load_matcher": ".registry",
    "localize": ".sfm.localization",
    "triangulate": ".sfm.triangulation",
}

__all__ = ["Features", "Matches", "TwoViewGeometry", "Extractor", "Matcher", "MatcherCapabilities",
           "MatchlabError", "ImageError", "ShapeError", "ConfigError",
           "read_image", "load_extractor", "load_matcher", "localize", "triangulate"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
