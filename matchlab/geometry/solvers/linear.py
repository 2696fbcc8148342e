"""Linear (non-minimal) solvers: the normalised DLT homography and the 8-point essential
matrix (numpy, weights as IRLS weights of the squared residual: rows scaled by sqrt(w)),
the confidence-weighted 8-point (torch, differentiable: rows scaled by the confidence,
null vector by `eigh`), and Nister's 5-point solver (OpenCV).

Points are normalised image coordinates for the essential solvers and pixels for the
homography; both numpy solvers drop matches with a non-finite coordinate or a weight <= 0.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..primitives.camera import homogeneous
from ..primitives.epipolar import hartley
from .batch import check_count, prepare_batch, unbatch

MIN_MATCHES_8PT = 8


def epipolar_rows(a, b):
    """[..., N, 9] rows of the epipolar constraint b^T F a = 0, linear in F (row-major), for
    homogeneous points a, b [..., N, 3] (numpy or torch)."""
    return (b[..., :, None] * a[..., None, :]).reshape(b.shape[:-1] + (9,))


def _pad9(rows: np.ndarray) -> np.ndarray:
    """At least 9 rows (zero rows added), so a thin SVD still gives all 9 right vectors."""
    if len(rows) >= 9:
        return rows
    return np.concatenate([rows, np.zeros((9 - len(rows), rows.shape[1]))], 0)


def _finite_weighted(p0, p1, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches [N, 2] x 2 and weights [N] (ones when None) as float64, without the matches
    that have a non-finite coordinate or a weight that is not > 0."""
    p0 = np.asarray(p0, np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, np.float64).reshape(-1, 2)
    w = np.ones(len(p0)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    keep = np.isfinite(p0).all(1) & np.isfinite(p1).all(1) & np.isfinite(w) & (w > 0)
    return p0[keep], p1[keep], w[keep]


def homography_dlt(p0: np.ndarray, p1: np.ndarray, weights: np.ndarray | None = None
                   ) -> np.ndarray | None:
    """Normalised (weighted) DLT homography [3, 3] (H[2, 2] = 1 where possible) from >= 4
    matches [N, 2]; None for fewer, non-finite or degenerate (e.g. collinear) points."""
    p0, p1, w = _finite_weighted(p0, p1, weights)
    if len(p0) < 4:
        return None
    T0, T1 = hartley(p0, w), hartley(p1, w)
    a, b = homogeneous(p0) @ T0.T, homogeneous(p1) @ T1.T
    z = np.zeros_like(a)
    rows = np.concatenate([np.concatenate([z, -a, b[:, 1:2] * a], 1),
                           np.concatenate([a, z, -b[:, 0:1] * a], 1)], 0)
    rows *= np.sqrt(np.concatenate([w, w]))[:, None]
    _, s, vh = np.linalg.svd(_pad9(rows), full_matrices=False)
    if s[7] <= 1e-10 * s[0]:  # a null space of dimension > 1: collinear / repeated points
        return None
    Hn = vh[-1].reshape(3, 3)
    H = np.linalg.inv(T1) @ Hn @ T0
    if not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-14 * np.abs(H).max() ** 3:
        return None
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H / np.linalg.norm(H)


def essential_8pt(p0: np.ndarray, p1: np.ndarray, weights: np.ndarray | None = None
                  ) -> np.ndarray | None:
    """(Weighted) 8-point essential matrix [3, 3] (unit Frobenius norm, singular values
    (1, 1, 0) up to scale) from >= 8 normalised matches [N, 2]; None if degenerate."""
    p0, p1, w = _finite_weighted(p0, p1, weights)
    if len(p0) < 8:
        return None
    T0, T1 = hartley(p0, w), hartley(p1, w)
    a, b = homogeneous(p0) @ T0.T, homogeneous(p1) @ T1.T
    rows = epipolar_rows(a, b) * np.sqrt(w)[:, None]
    _, s, vh = np.linalg.svd(_pad9(rows), full_matrices=False)
    if s[7] <= 1e-10 * s[0]:
        return None
    F = T1.T @ vh[-1].reshape(3, 3) @ T0
    u, _, vt = np.linalg.svd(F)
    E = u @ np.diag([1.0, 1.0, 0.0]) @ vt
    return E / np.linalg.norm(E) if np.isfinite(E).all() else None


def essential_5pt(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """All essential matrices [M, 3, 3] of Nister's 5-point solver (OpenCV) on exactly the
    first 5 normalised matches; [0, 3, 3] for fewer or degenerate points."""
    p0 = np.asarray(p0, np.float64).reshape(-1, 2)[:5]
    p1 = np.asarray(p1, np.float64).reshape(-1, 2)[:5]
    if len(p0) < 5 or not (np.isfinite(p0).all() and np.isfinite(p1).all()):
        return np.zeros((0, 3, 3))
    # LMEDS on 5 points evaluates the minimal solver on that single sample
    E, _ = cv2.findEssentialMat(p0, p1, np.eye(3), method=cv2.LMEDS, prob=0.999)
    if E is None or E.shape[1] != 3:
        return np.zeros((0, 3, 3))
    return E.reshape(-1, 3, 3)


def weighted_eight_point(x0, x1, weights=None, mask=None):
    """Torch: essential matrix from normalised correspondences by the confidence-weighted
    8-point (differentiable; Roessle & Niessner 2023).

    x0, x1: [B, M, 2] (or [M, 2]) intrinsics-normalised points; weights: [B, M] confidences
    (default 1); mask: [B, M] valid matches (default all). Steps: Hartley
    normalisation of each point set (over the valid matches), one row
    [x1 x0, x1 y0, x1, y1 x0, y1 y0, y1, x0, y0, 1] per match scaled by its confidence
    (confidences renormalised to sum 1), the null vector of the weighted system, rank-2
    projection, de-normalisation. Returns E [B, 3, 3] with unit Frobenius norm (up to sign)
    and x1^T E x0 ~ 0. Raises ValueError when a pair has fewer than 8 valid matches with
    positive weight.
    """
    import torch

    x0, x1, w, mask, batched = prepare_batch(x0, x1, weights, mask)
    check_count(mask, w, MIN_MATCHES_8PT, "the weighted eight-point")
    if (w < 0).any():
        raise ValueError("weights must be >= 0")
    m = mask.to(w.dtype)
    T0, T1 = hartley(x0, m), hartley(x1, m)
    a = homogeneous(x0) @ T0.transpose(1, 2)
    b = homogeneous(x1) @ T1.transpose(1, 2)
    w = w * m
    w = w / w.sum(-1, keepdim=True)
    rows = epipolar_rows(a, b) * w[..., None]
    _, vecs = torch.linalg.eigh(rows.transpose(1, 2) @ rows)              # ascending
    F = vecs[..., 0].reshape(-1, 3, 3)
    # rank 2: F (I - v v^T) with v the right null direction (smallest eigenvector of F^T F)
    _, fv = torch.linalg.eigh(F.transpose(1, 2) @ F)
    v = fv[..., 0]
    F = F - (F @ v[..., None]) @ v[:, None]
    E = T1.transpose(1, 2) @ F @ T0
    E = E / E.flatten(1).norm(dim=-1)[:, None, None]
    return unbatch(E, batched)
