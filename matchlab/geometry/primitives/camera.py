"""Camera and rotation primitives, each once; numpy and torch side by side.

Conventions used by every geometry module:
- K: [3, 3] pinhole intrinsics, pixel coordinates with (0, 0) the centre of the top-left pixel;
- normalised image coordinates are ((x - cx) / fx, (y - cy) / fy), i.e. K^-1 applied;
- a relative pose maps camera-0 to camera-1 coordinates, X1 = R X0 + t;
- gravity: a direction g [3] in CAMERA coordinates pointing down (towards the ground); an
  upright camera (OpenCV axes: x right, y down, z forward) has g = (0, 1, 0).

`homogeneous` and `skew` take a numpy array (computed in float64) or a torch tensor (kept in
its dtype and device, differentiable); the other functions are numpy-only or torch-only as
named in their docstrings.
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

UPRIGHT = np.array([0.0, 1.0, 0.0])


def torch_of(x):
    """The torch module when `x` is a torch tensor, else None (torch is not imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def homogeneous(p):
    """[..., 2] -> [..., 3] with a trailing 1."""
    torch = torch_of(p)
    if torch is not None:
        return torch.cat([p, torch.ones_like(p[..., :1])], dim=-1)
    p = np.asarray(p, dtype=np.float64)
    return np.concatenate([p, np.ones(p.shape[:-1] + (1,))], -1)


def skew(v):
    """[..., 3] -> [..., 3, 3] cross-product matrices: skew(v) @ u == v x u."""
    xp = torch_of(v)
    if xp is None:
        xp, v = np, np.asarray(v, dtype=np.float64)
    z = xp.zeros_like(v[..., 0])
    return xp.stack([xp.stack([z, -v[..., 2], v[..., 1]], -1),
                     xp.stack([v[..., 2], z, -v[..., 0]], -1),
                     xp.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def so3_exp(w):
    """Torch: [..., 3] axis-angle -> [..., 3, 3] rotation (Rodrigues), with a series at small
    angles so that values and gradients stay finite at 0."""
    import torch

    theta2 = (w * w).sum(-1)
    small = theta2 < 1e-10
    safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe)
    K = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def normalize_points(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Numpy: [N, 2] pixels -> [N, 2] normalised image coordinates ((x - cx) / fx, (y - cy) / fy)."""
    K = np.asarray(K, dtype=np.float64)
    return (np.asarray(kpts, dtype=np.float64) - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def mean_focal(K0: np.ndarray, K1: np.ndarray, superglue: bool = False) -> float:
    """The focal length (pixels) that turns a pixel threshold into normalised units.

    Default: the mean of the four focal entries fx0, fy0, fx1, fy1. superglue=True: the
    SuperGlue evaluation's formula mean(fx0, fy1, fx0, fy1), kept by the estimators of that
    protocol so that their thresholds (and numbers) stay comparable with the published ones.
    """
    K0, K1 = np.asarray(K0, dtype=np.float64), np.asarray(K1, dtype=np.float64)
    entries = ([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]] if superglue
               else [K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    return float(np.mean(entries))


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


def default_intrinsics(image_size: tuple[int, int], focal_factor: float = 1.2) -> np.ndarray:
    """A guessed pinhole K for an uncalibrated image of (width, height): focal
    focal_factor * max(W, H), principal point at the image centre (pixel-centre convention)."""
    w, h = image_size
    f = focal_factor * max(w, h)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])


def gravity_rotation(g: np.ndarray | None) -> np.ndarray:
    """The smallest rotation G [3, 3] with G e_y = g / |g| (g: gravity in camera coordinates,
    pointing down; None = upright camera, G = I), so that X_cam = G X_aligned takes
    coordinates of the gravity-aligned frame (y down) to the camera's. Raises ValueError for
    a zero vector."""
    if g is None:
        return np.eye(3)
    g = np.asarray(g, dtype=np.float64).reshape(3)
    n = np.linalg.norm(g)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"gravity must be a non-zero 3-vector, got {g}")
    g = g / n
    e = UPRIGHT
    v = np.cross(e, g)
    c = float(e @ g)
    if c < -1 + 1e-12:  # upside down: rotate by pi about the optical axis
        return np.diag([-1.0, -1.0, 1.0])
    vx = skew(v)
    return np.eye(3) + vx + vx @ vx / (1 + c)
