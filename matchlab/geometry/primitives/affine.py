"""Affine correspondences (ACs) from local affine frames, and the small pieces of geometry
around them (numpy, float64).

An affine correspondence is a point match (x0, x1) plus the 2x2 matrix A that maps small
displacements around x0 in image 0 to displacements around x1 in image 1: dx1 = A dx0.
With LAFs [A0 | x0] and [A1 | x1] (kornia layout, see matchlab.geometry.laf) a point u of
the canonical patch lands at x0 + A0 u and x1 + A1 u, so

    A = A1 A0^-1.

For a homography H (x1 ~ H x0) the exact local affine map is its Jacobian at x0
(`matchlab.geometry.primitives.homography.homography_jacobian`); for calibrated cameras the
AC is expressed in normalised image coordinates by `normalize_affine`
(A_n = K1[:2, :2]^-1 A K0[:2, :2]).
"""
from __future__ import annotations

import itertools

import numpy as np


def affine_from_lafs(lafs0: np.ndarray, lafs1: np.ndarray) -> np.ndarray:
    """[..., 2, 2] affine maps A = A1 A0^-1 of corresponding LAFs [..., 2, 3] (broadcasting).

    Singular source frames give non-finite entries (callers drop those rows)."""
    lafs0 = np.asarray(lafs0, dtype=np.float64)
    lafs1 = np.asarray(lafs1, dtype=np.float64)
    a0, a1 = lafs0[..., :2, :2], lafs1[..., :2, :2]
    det = a0[..., 0, 0] * a0[..., 1, 1] - a0[..., 0, 1] * a0[..., 1, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.stack([np.stack([a0[..., 1, 1], -a0[..., 0, 1]], -1),
                        np.stack([-a0[..., 1, 0], a0[..., 0, 0]], -1)], -2) / det[..., None, None]
    return a1 @ inv


def pool_affines(lafs0: np.ndarray, lafs1: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """ACs of candidate pools: [N0, k, 2, 2] from LAFs [N0, 2, 3], [N1, 2, 3] and candidates
    [N0, k] (indices into image 1, -1 = empty slot, which gets NaN)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    lafs1 = np.asarray(lafs1, dtype=np.float64)
    dst = lafs1[np.clip(candidates, 0, max(len(lafs1) - 1, 0))] if len(lafs1) else \
        np.full(candidates.shape + (2, 3), np.nan)
    out = affine_from_lafs(np.asarray(lafs0, dtype=np.float64)[:, None], dst)
    out[candidates < 0] = np.nan
    return out


def neighbour_affines(kpts0: np.ndarray, kpts1: np.ndarray, matches0: np.ndarray,
                      candidates: np.ndarray, num_neighbours: int = 8, tolerance_px: float = 3.0,
                      chunk: int = 1024) -> np.ndarray:
    """ACs of candidate pools fitted to matched neighbours instead of local frames: [N0, k, 2, 2].

    For source i, the 2x2 part A of the affine map y = A x + b fitted to the
    `num_neighbours` nearest other sources n (in image 0, pixels) that have a match
    matches0[n] >= 0 (pairs (kpts0[n], kpts1[matches0[n]])), robustly: every triplet of
    neighbours gives an exact affine map, the one with most neighbours within `tolerance_px`
    wins, and A is the least-squares fit to those (outlier matches among the neighbours are
    common). The same A serves every candidate of i (the candidate enters the hypothesis as
    its point).
    NaN where a slot is empty (candidates -1), no triplet has the support of a fourth
    neighbour, or the supporting neighbours are collinear.
    kpts0 [N0, 2], kpts1 [N1, 2], matches0 [N0] (-1 = unmatched), candidates [N0, k].
    """
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    matches0 = np.asarray(matches0, dtype=np.int64).reshape(-1)
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(matches0) != len(kpts0):
        raise ValueError(f"matches0 has {len(matches0)} entries but kpts0 has {len(kpts0)} points")
    out = np.full(candidates.shape + (2, 2), np.nan)
    matched = np.nonzero(matches0 >= 0)[0]
    if len(matched) < 3 or len(kpts0) == 0:
        return out
    k = min(num_neighbours, len(matched) - 1)
    if k < 3:
        return out
    A = np.full((len(kpts0), 2, 2), np.nan)
    rows = np.nonzero((candidates >= 0).reshape(len(kpts0), -1).any(1))[0]  # sources with a pool
    triplets = np.array(list(itertools.combinations(range(k), 3)))                 # [T, 3]
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        nbr = nearest_matched(kpts0, matches0, part, k)                               # [C, k]
        x, y = kpts0[nbr], kpts1[matches0[nbr]]                                       # [C, k, 2]
        tx, ty = x[:, triplets], y[:, triplets]                                       # [C, T, 3, 2]
        Ts, Tb = fit_affine(tx.reshape(-1, 3, 2), ty.reshape(-1, 3, 2),
                                  np.ones((tx.shape[0] * len(triplets), 3)))
        Ts, Tb = Ts.reshape(len(x), len(triplets), 2, 2), Tb.reshape(len(x), len(triplets), 2)
        pred = x[:, None] @ np.swapaxes(Ts, 2, 3) + Tb[:, :, None]                   # [C, T, k, 2]
        close = np.linalg.norm(pred - y[:, None], axis=3) < tolerance_px             # NaN: False
        support = close.sum(2)
        best = support.argmax(1)
        w = close[np.arange(len(x)), best].astype(np.float64)
        w[support.max(1) < 4] = 0.0  # a triplet nobody else agrees with: no AC
        fit = fit_affine(x, y, w)
        A[part] = fit[0]
    out[:] = A[:, None]
    out[candidates < 0] = np.nan
    return out


def nearest_matched(kpts0: np.ndarray, matches0: np.ndarray, sources: np.ndarray,
                    k: int) -> np.ndarray:
    """[len(sources), k] indices into kpts0 of the k keypoints nearest to each source (image-0
    pixels) among those with a match (matches0 >= 0), the source itself excluded; needs at
    least k + 1 matched keypoints."""
    matched = np.nonzero(np.asarray(matches0) >= 0)[0]
    sources = np.asarray(sources, dtype=np.int64)
    d = np.linalg.norm(kpts0[sources, None] - kpts0[matched][None], axis=2)
    d[matched[None] == sources[:, None]] = np.inf
    return matched[np.argpartition(d, k - 1, axis=1)[:, :k]]


def fit_affine(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the (A [2, 2], b [2]) minimising sum_n w_n |y_n - A x_n - b|^2 for x, y [C, k, 2],
    w [C, k]; NaN where fewer than 3 points have weight or they are collinear."""
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w[..., None] * x).sum(1) / sw[:, None]
        my = (w[..., None] * y).sum(1) / sw[:, None]
        dx, dy = x - mx[:, None], y - my[:, None]
        wdx = np.swapaxes(w[..., None] * dx, 1, 2)                                 # [C, 2, k]
        C, M = wdx @ dx, np.swapaxes(w[..., None] * dy, 1, 2) @ dx
        det = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] * C[:, 1, 0]
        trace = C[:, 0, 0] + C[:, 1, 1]
        bad = (sw < 3) | ~(det > 1e-6 * trace ** 2)
        Cinv = np.stack([np.stack([C[:, 1, 1], -C[:, 0, 1]], -1),
                         np.stack([-C[:, 1, 0], C[:, 0, 0]], -1)], -2) / det[:, None, None]
        A = M @ Cinv
    A[bad] = np.nan
    b = my - (A @ mx[..., None])[..., 0]
    return A, b


def normalize_affine(A: np.ndarray, K0: np.ndarray, K1: np.ndarray) -> np.ndarray:
    """Pixel ACs [..., 2, 2] -> normalised-coordinate ACs: K1[:2, :2]^-1 A K0[:2, :2]."""
    K0, K1 = np.asarray(K0, np.float64), np.asarray(K1, np.float64)
    return np.linalg.inv(K1[:2, :2]) @ np.asarray(A, np.float64) @ K0[:2, :2]
