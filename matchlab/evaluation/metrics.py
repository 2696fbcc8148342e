"""Accuracy metrics shared by the benchmarks (numpy; angles in degrees, distances in pixels
unless stated).

Conventions: T_0to1 [4, 4] maps camera-0 to camera-1 coordinates (x1 = R x0 + t); K [3, 3]
pinhole intrinsics (see `matchlab.geometry.primitives.camera`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..geometry.primitives.camera import normalize_points
from ..geometry.primitives.epipolar import essential_from_pose, symmetric_epipolar_sq
from ..geometry.primitives.homography import warp_points


def error_auc(errors: Sequence[float], thresholds: Sequence[float]) -> list[float]:
    """Area under the cumulative error curve up to each threshold, normalised to [0, 1].

    The SuperGlue / LightGlue definition: sort the errors, recall(e) = fraction of errors <= e
    (failures are +inf), integrate recall from 0 to t by the trapezoid rule and divide by t.
    The curve starts at (0, 0), steps up at each sorted error, is linearly interpolated
    between them and held flat up to the threshold. 0 for an empty list.
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    if len(errors) == 0:
        return [0.0 for _ in thresholds]
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = []
    for t in thresholds:
        last = np.searchsorted(errors, t)
        x = np.concatenate([errors[:last], [t]])
        y = np.concatenate([recall[:last], [recall[last - 1]]])
        aucs.append(float(np.trapezoid(y, x) / t))
    return aucs


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
    (failed estimation), as in SuperGlue's `match_pairs.py`."""
    if R is None or t is None:
        return float("inf")
    T_0to1 = np.asarray(T_0to1, dtype=np.float64)
    return max(angle_error_translation(t, T_0to1[:3, 3]), angle_error_rotation(R, T_0to1[:3, :3]))


def epipolar_error(kpts0: np.ndarray, kpts1: np.ndarray, T_0to1: np.ndarray, K0: np.ndarray,
                   K1: np.ndarray) -> np.ndarray:
    """[N] squared symmetric epipolar distance (normalised units) of pixel matches [N, 2]
    under the true pose (SuperGlue's `compute_epipolar_error`; a match is 'correct' there
    when it is < 5e-4)."""
    T = np.asarray(T_0to1, dtype=np.float64)
    E = essential_from_pose(T[:3, :3], T[:3, 3])
    return symmetric_epipolar_sq(E, normalize_points(kpts0, K0), normalize_points(kpts1, K1))


def corner_error(H_est: np.ndarray, H_gt: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance (px) between the image corners mapped by the estimated and the true
    homography; size = (width, height) of image 0 (LightGlue's HPatches accuracy metric)."""
    w, h = size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    return float(np.linalg.norm(warp_points(H_est, corners) - warp_points(H_gt, corners), axis=1).mean())
