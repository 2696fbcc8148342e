"""Relative-pose estimation and error metrics, following the SuperGlue evaluation protocol
(magicleap/SuperGluePretrainedNetwork `models/utils.py`, `match_pairs.py`), which LightGlue /
glue-factory also use for their OpenCV baselines.

Pure functions over numpy arrays (float64 internally). Conventions:
- K: [3, 3] pinhole intrinsics, pixel coordinates with (0, 0) the centre of the top-left pixel;
- T_0to1: [4, 4] maps camera-0 coordinates to camera-1 coordinates (x1 = R x0 + t), so the
  essential matrix is E = [t]_x R and x1^T E x0 = 0 for normalised points;
- angles are in degrees.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def scale_intrinsics(K: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Intrinsics of an image resized by `scale`, as the SuperGlue evaluation does it.

    K: [3, 3]; scale: s or (sx, sy) = (new size / old size) per axis (e.g. 640 / 1296).
    Returns diag(sx, sy, 1) @ K ([3, 3] float64). (The official code passes the inverse
    factors, old / new, and divides; this is the same matrix.) Like the official code this
    scales the principal point directly, i.e. it ignores the half-pixel shift of the
    pixel-centre convention (an error of (s - 1) / 2 px, negligible for pose).
    """
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    return np.diag([float(sx), float(sy), 1.0]) @ np.asarray(K, dtype=np.float64)


def normalize_points(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """[N, 2] pixels -> [N, 2] normalised image coordinates ((x - cx) / fx, (y - cy) / fy)."""
    K = np.asarray(K, dtype=np.float64)
    return (np.asarray(kpts, dtype=np.float64) - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def matched_points(kpts0, kpts1) -> tuple[np.ndarray, np.ndarray]:
    """Two [N, 2] float64 arrays of matched points; ValueError when their lengths differ."""
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    if len(kpts0) != len(kpts1):
        raise ValueError(f"kpts0 and kpts1 must have the same length, got {len(kpts0)} and {len(kpts1)}")
    return kpts0, kpts1


def estimate_pose_opencv(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                         thresh_px: float, conf: float = 0.99999, seed: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Relative pose from matched pixels with OpenCV's 5-point RANSAC (SuperGlue protocol).

    kpts0, kpts1: [N, 2] matched pixel coordinates; K0, K1: [3, 3].
    The points are normalised by their intrinsics and `cv2.findEssentialMat` (RANSAC, identity
    camera) runs with threshold = thresh_px / f_mean and probability `conf`, where f_mean is
    the official formula mean(K0[0,0], K1[1,1], K0[0,0], K1[1,1]) (fx of image 0 and fy of
    image 1). findEssentialMat may return several stacked 3x3 candidates; each is passed to
    `cv2.recoverPose` (cheirality check with a copy of the RANSAC inlier mask) and the
    candidate with the most points in front of both cameras wins.
    seed: None runs OpenCV on the points in the given order. OpenCV's RANSAC for
    findEssentialMat draws its samples from an internal generator with a FIXED seed
    (`cv2.setRNGSeed` does not reach it), so the result is deterministic for a given input
    order; with a seed, the correspondences are shuffled by `np.random.default_rng(seed)`
    (and `cv2.setRNGSeed(seed)` is called as well), so that different seeds give
    independent RANSAC runs, e.g. to average metrics over seeds. The returned mask is in
    the caller's order.

    Returns (R [3, 3], t [3] unit vector, inlier_mask [N] bool: RANSAC inliers that pass the
    cheirality check of the chosen E), or None if N < 5 or no pose was found.
    """
    kpts0, kpts1 = matched_points(kpts0, kpts1)
    if len(kpts0) < 5:
        return None
    K0 = np.asarray(K0, dtype=np.float64)
    K1 = np.asarray(K1, dtype=np.float64)
    f_mean = np.mean([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]])
    p0 = normalize_points(kpts0, K0)
    p1 = normalize_points(kpts1, K1)
    order = None
    if seed is not None:
        cv2.setRNGSeed(int(seed))
        order = np.random.default_rng(int(seed)).permutation(len(p0))
        p0, p1 = p0[order], p1[order]
    E, mask = cv2.findEssentialMat(p0, p1, np.eye(3), threshold=thresh_px / f_mean, prob=conf,
                                   method=cv2.RANSAC)
    if E is None or mask is None:
        return None
    best, best_n = None, 0
    for E_i in np.split(E, len(E) // 3):
        n, R, t, mask_i = cv2.recoverPose(E_i, p0, p1, np.eye(3), 1e9, mask=mask.copy())
        if n > best_n:
            best_n, best = n, (R, t[:, 0], mask_i.ravel() > 0)
    if best is not None and order is not None:
        inliers = np.zeros(len(order), dtype=bool)
        inliers[order] = best[2]
        best = (best[0], best[1], inliers)
    return best


def angle_error_rotation(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle (degrees) of the rotation R_est^T R_gt: arccos((trace - 1) / 2), clipped."""
    cos = (np.trace(np.asarray(R_est, float).T @ np.asarray(R_gt, float)) - 1.0) / 2.0
    return float(np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0))))


def angle_error_translation(t_est: np.ndarray, t_gt: np.ndarray) -> float:
    """Angle (degrees) between translation directions, sign-agnostic: min(e, 180 - e).

    An essential matrix fixes t only up to sign (and scale), so the SuperGlue protocol takes
    the smaller of the angles to t_gt and -t_gt. Returns 90 if either vector is zero
    (no direction)."""
    t_est, t_gt = np.asarray(t_est, float).ravel(), np.asarray(t_gt, float).ravel()
    n = np.linalg.norm(t_est) * np.linalg.norm(t_gt)
    if n == 0:
        return 90.0
    err = float(np.rad2deg(np.arccos(np.clip(np.dot(t_est, t_gt) / n, -1.0, 1.0))))
    return min(err, 180.0 - err)


def pose_error(T_0to1: np.ndarray, R: np.ndarray | None, t: np.ndarray | None) -> float:
    """max(rotation error, translation-direction error) in degrees; inf when R is None
    (failed estimation), as in `match_pairs.py`."""
    if R is None or t is None:
        return float("inf")
    T_0to1 = np.asarray(T_0to1, dtype=np.float64)
    return max(angle_error_translation(t, T_0to1[:3, 3]), angle_error_rotation(R, T_0to1[:3, :3]))


def pose_auc(errors: Sequence[float], thresholds: Sequence[float]) -> list[float]:
    """Area under the cumulative recall curve of pose errors, up to each threshold, / threshold.

    errors: [N] degrees (inf for failures); thresholds: e.g. (5, 10, 20). Recall(e) is the
    fraction of pairs with error <= e; the curve starts at (0, 0), steps up at each sorted
    error, is linearly interpolated between them (trapezoids, as in SuperGlue / LightGlue)
    and held flat up to the threshold. Returns one value in [0, 1] per threshold (0 for an
    empty list).
    """
    from ..evaluation.metrics import error_auc

    return error_auc(np.asarray(errors, dtype=np.float64).ravel(), thresholds)


def relative_pose_from_T(T_0to1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R [3, 3], t [3]) of a [4, 4] transform."""
    T = np.asarray(T_0to1, dtype=np.float64)
    return T[:3, :3], T[:3, 3]


def epipolar_error(kpts0: np.ndarray, kpts1: np.ndarray, T_0to1: np.ndarray, K0: np.ndarray,
                   K1: np.ndarray) -> np.ndarray:
    """[N] squared symmetric epipolar distance in normalised coordinates (SuperGlue's
    `compute_epipolar_error`; a match is 'correct' there when it is < 5e-4)."""
    p0 = np.concatenate([normalize_points(kpts0, K0), np.ones((len(kpts0), 1))], 1)
    p1 = np.concatenate([normalize_points(kpts1, K1), np.ones((len(kpts1), 1))], 1)
    R, t = relative_pose_from_T(T_0to1)
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ R
    Ep0 = p0 @ E.T
    Etp1 = p1 @ E
    p1Ep0 = np.sum(p1 * Ep0, -1)
    return p1Ep0 ** 2 * (1.0 / (Ep0[:, 0] ** 2 + Ep0[:, 1] ** 2) + 1.0 / (Etp1[:, 0] ** 2 + Etp1[:, 1] ** 2))
