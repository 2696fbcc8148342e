"""Robust homography estimators behind one name table (pure functions of matched points)."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


def homography_opencv(points0: np.ndarray, points1: np.ndarray, threshold_px: float,
                      seed: int = 0) -> np.ndarray | None:
    """OpenCV RANSAC homography [3, 3] mapping points0 -> points1 ([M, 2] px), or None."""
    if len(points0) < 4:
        return None
    cv2.setRNGSeed(seed)
    H, _ = cv2.findHomography(points0.astype(np.float64), points1.astype(np.float64), cv2.RANSAC,
                              threshold_px, maxIters=10000, confidence=0.9999)
    return H


def homography_pycolmap(points0: np.ndarray, points1: np.ndarray, threshold_px: float,
                        seed: int = 0) -> np.ndarray | None:
    """pycolmap LO-RANSAC homography [3, 3] mapping points0 -> points1, or None."""
    import pycolmap

    if len(points0) < 4:
        return None
    options = pycolmap.RANSACOptions(max_error=threshold_px, random_seed=seed, max_num_trials=10000)
    result = pycolmap.estimate_homography_matrix(points0.astype(np.float64), points1.astype(np.float64),
                                                 options)
    return None if result is None else np.asarray(result["H"])


HOMOGRAPHY_ESTIMATORS: dict[str, Callable[..., np.ndarray | None]] = {
    "ransac": homography_opencv,
    "lo-ransac": homography_pycolmap,
}
