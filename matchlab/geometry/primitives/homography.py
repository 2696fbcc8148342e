"""Homography primitives (numpy, float64), each once.

A homography H [3, 3] maps pixels of image 0 to image 1: x1 ~ H x0~. Batching contract:
H [..., 3, 3] is applied to points [..., 2] with all leading dimensions broadcast (einsum
"...ij,...j"), so H [3, 3] maps points [N, 2] to [N, 2], and H [M, 1, 1, 3, 3] against pools
[N0, k, 2] gives [M, N0, k, 2] (every model against every candidate).
"""
from __future__ import annotations

import numpy as np

from .camera import homogeneous


def warp_points(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """H(points): points [..., 2] (pixels) -> [..., 2]; a third coordinate closer to 0 than
    1e-12 is replaced by 1e-12 (points on the line at infinity land far away, not at NaN)."""
    H = np.asarray(H, dtype=np.float64)
    x = np.asarray(points, dtype=np.float64)
    hx = np.einsum("...ij,...j->...i", H[..., :, :2], x) + H[..., :, 2]
    z = hx[..., 2]
    z = np.where(np.abs(z) > 1e-12, z, 1e-12)
    return hx[..., :2] / z[..., None]


def transfer_sq(H: np.ndarray, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """Squared forward transfer error |H(points0) - points1|^2 in image-1 pixels^2; shapes:
    see the module docstring (points0 [..., 2] and points1 [..., 2] broadcast)."""
    d = warp_points(H, points0) - np.asarray(points1, np.float64)
    return (d * d).sum(-1)


def reprojection_errors(H: np.ndarray, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """[M] transfer error |H(points0) - points1| in image-1 pixels of matches [M, 2] (the
    square root of `transfer_sq`)."""
    return np.sqrt(transfer_sq(H, np.reshape(points0, (-1, 2)), np.reshape(points1, (-1, 2))))


def homography_jacobian(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[N, 2, 2] Jacobians d(H x)/dx at points [N, 2] (the exact affine correspondence a
    homography induces): J = (H[:2, :2] - y H[2, :2]) / s, with s = H[2] . (x, 1), y = H(x)."""
    H = np.asarray(H, dtype=np.float64)
    h = homogeneous(np.reshape(points, (-1, 2))) @ H.T
    s = h[:, 2]
    y = h[:, :2] / s[:, None]
    return (H[None, :2, :2] - y[:, :, None] * H[None, 2:3, :2]) / s[:, None, None]
