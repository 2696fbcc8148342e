"""7-DoF similarity (scale, rotation, translation) between point sets: Umeyama's method.

S. Umeyama, "Least-squares estimation of transformation parameters between two point
patterns", PAMI 1991. Pure numpy; used to align a reconstruction to ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Similarity", "umeyama"]


@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation (rotation proper: det = +1)."""

    scale: float
    rotation: np.ndarray     # [3, 3]
    translation: np.ndarray  # [3]

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [N, 3] (or one point [3])."""
        points = np.asarray(points, dtype=np.float64)
        return self.scale * points @ self.rotation.T + self.translation

    def inverse(self) -> "Similarity":
        r_inv = self.rotation.T
        return Similarity(1.0 / self.scale, r_inv, -(r_inv @ self.translation) / self.scale)

    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Similarity:
    """Least-squares similarity with dst ~= scale * R @ src + t over corresponding rows.

    src, dst: [N, D] with N >= 2 (D = 3 for `Similarity.apply`, any D works for the fit).
    with_scale=False fixes scale = 1 (a rigid 6-DoF fit). The rotation is always proper
    (no reflection). It is unique only when the src points are not collinear; for collinear
    points any rotation about the line is equally good and one of them is returned (the
    transformed points, hence alignment errors, are the same).
    Raises ValueError for mismatched shapes, non-finite values, fewer than 2 points, or
    src points that all coincide.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape != dst.shape:
        raise ValueError(f"src and dst must be [N, D] arrays of the same shape, got "
                         f"{src.shape} and {dst.shape}")
    n, d = src.shape
    if n < 2:
        raise ValueError(f"need at least 2 corresponding points, got {n}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c ** 2).sum() / n
    if var_src <= 1e-300 or var_src <= 1e-24 * max(1.0, float((src ** 2).sum() / n)):
        raise ValueError("the src points all coincide: the similarity is undefined")
    cov = dst_c.T @ src_c / n  # [D, D]
    u, sigma, vt = np.linalg.svd(cov)
    s = np.ones(d)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -1.0
    rotation = u @ np.diag(s) @ vt
    scale = float((sigma * s).sum() / var_src) if with_scale else 1.0
    translation = mu_dst - scale * rotation @ mu_src
    return Similarity(scale, rotation, translation)
