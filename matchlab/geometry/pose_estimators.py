"""Robust relative-pose estimators behind one name table.

Every estimator is a pure function with the same signature:

    estimate(kpts0, kpts1, K0, K1, *, threshold_px=1.0, scores=None, seed=0) -> PoseEstimate | None

kpts0, kpts1: [M, 2] matched pixel coordinates (float64); K0, K1: [3, 3] intrinsics;
scores: [M] match confidences in [0, 1] (used by the confidence-weighted estimators, ignored
by the others); threshold_px: inlier threshold in pixels; seed: makes the run repeatable.
Returns None when no pose could be found (too few matches, degenerate input).

Names (used by `matchlab eval pose --estimator`):
- ``ransac``: OpenCV 5-point RANSAC on normalised points (the SuperGlue protocol);
- ``lo-ransac``: pycolmap's LO-RANSAC essential matrix with cheirality decomposition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .relative_pose import estimate_pose_opencv


@dataclass
class PoseEstimate:
    """R: [3, 3] and t: [3] unit vector with x1 = R x0 + t (camera 0 -> camera 1);
    inliers: [M] bool over the input matches."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray


def pose_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                threshold_px: float = 1.0, scores: np.ndarray | None = None,
                seed: int = 0) -> PoseEstimate | None:
    """OpenCV RANSAC essential matrix, probability 0.99999, threshold over the mean focal."""
    result = estimate_pose_opencv(kpts0, kpts1, K0, K1, threshold_px, seed=seed)
    return None if result is None else PoseEstimate(*result)


def _pinhole(K: np.ndarray):
    import pycolmap

    K = np.asarray(K, dtype=np.float64)
    # width/height only bound the image; the estimator works on normalised rays
    return pycolmap.Camera(model="PINHOLE", width=int(2 * K[0, 2]) + 1, height=int(2 * K[1, 2]) + 1,
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])


def pose_lo_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                   threshold_px: float = 1.0, scores: np.ndarray | None = None,
                   seed: int = 0) -> PoseEstimate | None:
    """pycolmap LO-RANSAC essential matrix (threshold in pixels), decomposed by cheirality."""
    import pycolmap

    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    if len(kpts0) != len(kpts1):
        raise ValueError(f"kpts0 and kpts1 must have the same length, got {len(kpts0)} and {len(kpts1)}")
    if len(kpts0) < 5:
        return None
    options = pycolmap.RANSACOptions(max_error=float(threshold_px), random_seed=int(seed),
                                     confidence=0.99999, max_num_trials=10000)
    result = pycolmap.estimate_essential_matrix(kpts0, kpts1, _pinhole(K0), _pinhole(K1), options)
    if result is None:
        return None
    pose = result["cam2_from_cam1"]
    t = np.asarray(pose.translation, dtype=np.float64)
    norm = np.linalg.norm(t)
    return PoseEstimate(np.asarray(pose.rotation.matrix(), dtype=np.float64),
                        t / norm if norm > 0 else t, np.asarray(result["inlier_mask"], dtype=bool))


PoseEstimator = Callable[..., "PoseEstimate | None"]

POSE_ESTIMATORS: dict[str, PoseEstimator] = {
    "ransac": pose_ransac,
    "lo-ransac": pose_lo_ransac,
}


def get_pose_estimator(name: str) -> PoseEstimator:
    if name not in POSE_ESTIMATORS:
        raise ValueError(f"unknown pose estimator {name!r}; available: {', '.join(POSE_ESTIMATORS)}")
    return POSE_ESTIMATORS[name]
