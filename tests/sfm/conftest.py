"""Fixtures shared by the tests of matchlab.sfm."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fountain(datasets_root, tmp_path_factory):
    """fountain-P11 with OpenCV SIFT, exhaustive matches, a verified database and the
    ground truth (`test_sfm.sift_fountain`); modules with a `fountain` of their own use theirs."""
    from sfm.test_sfm import sift_fountain

    return sift_fountain(datasets_root, tmp_path_factory)
