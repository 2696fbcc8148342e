"""Epipolar primitives, each once; numpy and torch side by side.

Points are normalised image coordinates (see `matchlab.geometry.primitives.camera`); a
relative pose maps camera-0 to camera-1 coordinates, X1 = R X0 + t, so E = [t]_x R and
x1~^T E x0~ = 0 with x~ = (x, 1).

Batching contract of the residuals (`sampson_sq`, `symmetric_epipolar_sq`): E [..., 3, 3] is
applied to points [..., 2] with ALL leading dimensions broadcast (einsum "...ij,...j"), so
E [M, 1, 1, 3, 3] against pools x0 [N0, 1, 2], x1 [N0, k, 2] gives [M, N0, k] (every model
against every candidate), and E [B, 1, 3, 3] against x0, x1 [B, N, 2] gives [B, N] (one
model per pair). Both return SQUARED distances in normalised units; take the square root
for a distance. They work on numpy arrays (float64) and on torch tensors (differentiable).
"""
from __future__ import annotations

import cv2
import numpy as np

from .camera import homogeneous, skew, torch_of


def _xp(x):
    return torch_of(x) or np


def _floor(x, value: float):
    """max(x, value) elementwise, keeping the gradient where x > value."""
    return x.clamp_min(value) if torch_of(x) is not None else np.maximum(x, value)


def _lines(E, x0, x1):
    """(E x0~ [..., 3], E^T x1~ [..., 3], x1~^T E x0~ [...]) under the module's batching."""
    xp = _xp(E)
    h0, h1 = homogeneous(x0), homogeneous(x1)
    Ex0 = xp.einsum("...ij,...j->...i", E, h0)
    Etx1 = xp.einsum("...ji,...j->...i", E, h1)
    return Ex0, Etx1, (h1 * Ex0).sum(-1)


def essential_from_pose(R, t):
    """[..., 3, 3] E = [t]_x R of rotations R [..., 3, 3] and translations t [..., 3]."""
    return skew(t) @ R


def sampson_sq(E, x0, x1):
    """Squared Sampson distance (the first-order geometric error) of matches x0, x1 to E:
    (x1~^T E x0~)^2 / (|(E x0~)_12|^2 + |(E^T x1~)_12|^2); shapes: see the module docstring."""
    Ex0, Etx1, num = _lines(E, x0, x1)
    den = Ex0[..., 0] ** 2 + Ex0[..., 1] ** 2 + Etx1[..., 0] ** 2 + Etx1[..., 1] ** 2
    return num ** 2 / _floor(den, 1e-300)


def symmetric_epipolar_sq(E, x0, x1):
    """Squared symmetric epipolar distance: the sum of the squared distances of x1 to the line
    E x0~ and of x0 to the line E^T x1~ (SuperGlue's `compute_epipolar_error`); shapes: see
    the module docstring. Not clamped: a point at the epipole gives a non-finite value."""
    Ex0, Etx1, num = _lines(E, x0, x1)
    return num ** 2 * (1.0 / (Ex0[..., 0] ** 2 + Ex0[..., 1] ** 2)
                       + 1.0 / (Etx1[..., 0] ** 2 + Etx1[..., 1] ** 2))


def hartley(x, w):
    """Hartley's normalisation: the similarity T [..., 3, 3] moving the weighted centroid of
    points x [..., N, 2] to 0 and their weighted mean distance from it to sqrt(2), so that
    T x~ are the normalised points. w [..., N]: weights >= 0 (a 0/1 mask selects points)."""
    xp = _xp(x)
    ws = w.sum(-1)
    c = (w[..., None] * x).sum(-2) / ws[..., None]
    dist = xp.sqrt(_floor(((x - c[..., None, :]) ** 2).sum(-1), 1e-300))
    s = 2 ** 0.5 / _floor((w * dist).sum(-1) / ws, 1e-12)
    z, one = xp.zeros_like(s), xp.ones_like(s)
    return xp.stack([xp.stack([s, z, -s * c[..., 0]], -1),
                     xp.stack([z, s, -s * c[..., 1]], -1),
                     xp.stack([z, z, one], -1)], -2)


# ---------------------------------------------------------------- decomposition (torch)
def project_to_essential(E, iterations: int = 40):
    """Torch: [B, 3, 3] rank-2 matrices -> the nearest matrices with singular values (1, 1, 0).

    Newton-Schulz polar iterations X <- X (3 I - X^T X) / 2 on E scaled to s1^2 + s2^2 = 2:
    singular values in (0, sqrt(3)) converge to 1 (quadratically near 1; a ratio s2 / s1 of
    1e-6 still converges within the 40 steps), 0 is kept at 0. Smooth in E (no SVD), so its
    gradient is finite for a perfect essential matrix too.
    """
    import torch

    X = E * (2.0 / (E * E).sum((-2, -1), keepdim=True).clamp_min(1e-300)).sqrt()
    eye = torch.eye(3, dtype=E.dtype, device=E.device)
    # 0 is an unstable fixed point (rounding noise grows by 1.5 per step): project the right
    # null direction v of E out after every step (v: smallest eigenvector of E^T E)
    v = torch.linalg.eigh(E.transpose(-2, -1) @ E)[1][..., 0]
    null = eye - v[..., :, None] * v[..., None, :]
    X = X @ null
    for _ in range(iterations):
        X = (0.5 * X @ (3 * eye - X.transpose(-2, -1) @ X)) @ null
    return X


def cofactor(A):
    """Torch: [..., 3, 3] cofactor matrix (det(A) A^-T when invertible): rows are cross products."""
    import torch

    r0, r1, r2 = A.unbind(-2)
    return torch.stack([torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0),
                        torch.linalg.cross(r0, r1)], -2)


def essential_candidates(E):
    """Torch: the four (R, t) with E ~ [t]_x R (up to sign and scale). E: [B, 3, 3].
    Returns R [B, 4, 3, 3] and unit t [B, 4, 3] in the order (Ra, b), (Ra, -b), (Rb, b), (Rb, -b).

    Without an SVD of E (whose two equal singular values make SVD gradients blow up): with X
    the essential projection of E (singular values 1, 1, 0), b b^T = I - X X^T gives the
    baseline b (unit); for X = [b]_x R: cof(X) = b b^T R and [b]_x X = (b b^T - I) R, so
    Ra = cof(X) - [b]_x X = R and Rb = cof(X) + [b]_x X = (2 b b^T - I) R (the twisted pair).
    """
    import torch

    X = project_to_essential(E)
    eye = torch.eye(3, dtype=E.dtype, device=E.device)
    P = eye - X @ X.transpose(-2, -1)                                    # b b^T
    column = P.detach().norm(dim=-2).argmax(-1)                          # best-conditioned column
    b = torch.take_along_dim(P, column[:, None, None].expand(-1, 3, 1), dim=-1)[..., 0]
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    cof, bx = cofactor(X), skew(b) @ X
    Ra, Rb = cof - bx, cof + bx
    return torch.stack([Ra, Ra, Rb, Rb], 1), torch.stack([b, -b, b, -b], 1)


def triangulate(x0, x1, R, t):
    """Torch: midpoint triangulation of normalised matches for X1 = R X0 + t.

    x0, x1: [..., M, 2]; R: [..., 3, 3]; t: [..., 3]. Returns (Y [..., M, 3] midpoints of
    the closest points of the two rays, in camera-0 coordinates; depth0, depth1 [..., M]:
    the depths of those closest points along each ray, z in each camera).
    """
    import torch

    f0 = homogeneous(x0)
    f1 = homogeneous(x1) @ R                                              # R^T x1h, camera-0 frame
    c1 = -(R.transpose(-2, -1) @ t[..., None])[..., 0]                    # camera-1 centre
    c1 = c1[..., None, :]
    a = (f0 * f0).sum(-1)
    b = (f0 * f1).sum(-1)
    c = (f1 * f1).sum(-1)
    p = (f0 * c1).sum(-1)
    q = (f1 * c1).sum(-1)
    det = a * c - b * b
    det = torch.where(det.abs() < 1e-15, torch.full_like(det, 1e-15), det)
    d0 = (p * c - b * q) / det
    d1 = (b * p - a * q) / det
    Y = 0.5 * (d0[..., None] * f0 + c1 + d1[..., None] * f1)
    return Y, d0, d1


# ---------------------------------------------------------------- decomposition (one contract)
def decompose_essential(E, x0, x1, weights=None, mask=None):
    """The relative pose of an essential matrix, chosen among its four decompositions by the
    cheirality of the matches: (R, t unit, in_front), in_front marking the matches in front
    of both cameras.

    numpy: E [3, 3], x0, x1 [N, 2]; OpenCV's recoverPose (the decomposition with the most
    points in front); returns None when no point is in front of both cameras.
    torch (differentiable): E [B, 3, 3], x0, x1 [B, N, 2], weights, mask [B, N] (default all
    ones); the decomposition with the largest total weight of matches in front (ties: the
    most matches); returns (R [B, 3, 3], t [B, 3], in_front [B, N] bool), never None.
    """
    torch = torch_of(E)
    if torch is not None:
        mask = torch.ones(x0.shape[:-1], dtype=torch.bool, device=x0.device) if mask is None else mask
        weights = torch.ones_like(x0[..., 0]) if weights is None else weights
        Rs, ts = essential_candidates(E)
        _, d0, d1 = triangulate(x0[:, None], x1[:, None], Rs, ts)          # [B, 4, M]
        front = (d0 > 0) & (d1 > 0) & mask[:, None]
        score = (front.to(weights.dtype) * weights[:, None]).sum(-1) + 1e-9 * front.sum(-1)
        best = score.argmax(-1)
        idx = torch.arange(E.shape[0], device=E.device)
        return Rs[idx, best], ts[idx, best], front[idx, best]
    x0 = np.asarray(x0, np.float64).reshape(-1, 2)
    x1 = np.asarray(x1, np.float64).reshape(-1, 2)
    if len(x0) < 1 or not np.isfinite(E).all():
        return None
    n, R, t, in_front = cv2.recoverPose(np.asarray(E, np.float64), x0, x1, np.eye(3), 1e9)
    if n == 0:
        return None
    return R, t[:, 0] / max(np.linalg.norm(t), 1e-300), in_front.ravel() > 0
