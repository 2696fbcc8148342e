"""OpenCV backend: RANSAC homography and 5-point RANSAC essential matrix (the SuperGlue
evaluation protocol); see `base` for the estimator protocol."""
from __future__ import annotations

import cv2
import numpy as np

from ..primitives.camera import mean_focal, normalize_points
from ..primitives.epipolar import essential_from_pose
from .base import matched_points, two_view_geometry


def homography_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0=None, K1=None, *,
                      threshold_px: float = 3.0, scores=None, seed: int = 0):
    """OpenCV RANSAC homography (x1 ~ H x0, pixels; 10,000 iterations, confidence 0.9999)."""
    kpts0, kpts1 = matched_points(kpts0, kpts1)
    if len(kpts0) < 4:
        return None
    cv2.setRNGSeed(seed)
    H, mask = cv2.findHomography(kpts0, kpts1, cv2.RANSAC, threshold_px, maxIters=10000,
                                 confidence=0.9999)
    if H is None or H.shape != (3, 3):
        return None
    return two_view_geometry("homography", H, mask.ravel() > 0)


def essential_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                     threshold_px: float = 1.0, scores=None, seed: int | None = 0,
                     conf: float = 0.99999):
    """Relative pose from matched pixels with OpenCV's 5-point RANSAC (SuperGlue protocol).

    The points are normalised by their intrinsics and `cv2.findEssentialMat` (RANSAC, identity
    camera) runs with threshold = threshold_px / f_mean and probability `conf`, where f_mean is
    the SuperGlue formula (`mean_focal(..., superglue=True)`). findEssentialMat may return
    several stacked 3x3 candidates; each is passed to `cv2.recoverPose` (cheirality check with
    a copy of the RANSAC inlier mask) and the candidate with the most points in front of both
    cameras wins.
    seed: None runs OpenCV on the points in the given order. OpenCV's RANSAC for
    findEssentialMat draws its samples from an internal generator with a FIXED seed
    (`cv2.setRNGSeed` does not reach it), so the result is deterministic for a given input
    order; with a seed, the correspondences are shuffled by `np.random.default_rng(seed)`
    (and `cv2.setRNGSeed(seed)` is called as well), so that different seeds give
    independent RANSAC runs, e.g. to average metrics over seeds. The inlier mask is in the
    caller's order: RANSAC inliers that pass the cheirality check of the chosen E.
    Returns None if N < 5 or no pose was found.
    """
    kpts0, kpts1 = matched_points(kpts0, kpts1)
    if len(kpts0) < 5:
        return None
    f_mean = mean_focal(K0, K1, superglue=True)
    p0 = normalize_points(kpts0, K0)
    p1 = normalize_points(kpts1, K1)
    order = None
    if seed is not None:
        cv2.setRNGSeed(int(seed))
        order = np.random.default_rng(int(seed)).permutation(len(p0))
        p0, p1 = p0[order], p1[order]
    E, mask = cv2.findEssentialMat(p0, p1, np.eye(3), threshold=threshold_px / f_mean, prob=conf,
                                   method=cv2.RANSAC)
    if E is None or mask is None:
        return None
    best, best_n = None, 0
    for E_i in np.split(E, len(E) // 3):
        n, R, t, mask_i = cv2.recoverPose(E_i, p0, p1, np.eye(3), 1e9, mask=mask.copy())
        if n > best_n:
            best_n, best = n, (R, t[:, 0], mask_i.ravel() > 0)
    if best is None:
        return None
    R, t, inliers = best
    if order is not None:
        inliers = np.zeros(len(order), dtype=bool)
        inliers[order] = best[2]
    return two_view_geometry("essential", essential_from_pose(R, t), inliers, R, t)
