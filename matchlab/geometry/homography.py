"""Homography helpers (pure numpy functions)."""
from __future__ import annotations

import numpy as np


def warp_points(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to [N, 2] pixel points; returns [N, 2]."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ np.asarray(H).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def reprojection_errors(H: np.ndarray, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """[M] distance in image 1 pixels between H(points0) and points1 (both [M, 2])."""
    if len(points0) == 0:
        return np.zeros(0)
    return np.linalg.norm(warp_points(H, points0) - np.asarray(points1, dtype=np.float64), axis=1)


def corner_error(H_est: np.ndarray, H_gt: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance (px) between the image corners mapped by the estimated and true homography.

    size = (width, height) of image 0; the LightGlue/HPatches homography-accuracy metric.
    """
    w, h = size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    return float(np.linalg.norm(warp_points(H_est, corners) - warp_points(H_gt, corners), axis=1).mean())
