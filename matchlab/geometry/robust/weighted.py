"""Confidence-weighted backend (torch): the weighted eight-point and the two-view bundle
adjustment of Roessle & Niessner ("End2End Multi-View Feature Matching with Differentiable
Pose Optimization", ICCV 2023), as differentiable functions and as estimators of the table
(see `base` for the estimator protocol).

Estimators:
- ``w8pt``: the confidence-weighted eight-point on all matches (no RANSAC), cheirality
  selection;
- ``w8pt+ba``: ``w8pt`` refined by the two-view bundle adjustment on all matches, weighted
  by the confidences (the paper's default);
- ``ransac+ba``: OpenCV's ``ransac``, then the bundle adjustment on the RANSAC inliers
  weighted by the confidences (the RANSAC pose is returned unchanged when fewer than 6
  inliers are in front of both cameras);
- ``w8pt-irls``, ``w8pt-irls+ba``: our addition, not in the paper: ``w8pt`` made robust by
  iteratively reweighted least squares (confidence x Cauchy weight of the Sampson error, 10
  steps, scale threshold_px), and the BA run with those weights.
They use ``scores`` (all ones when None) and are deterministic (``seed`` only reaches the
RANSAC of ``ransac+ba``). Their inliers: matches in front of both cameras whose symmetric
epipolar distance is at most 3 * threshold_px / mean focal (the paper reports 3 px).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..primitives.camera import mean_focal, normalize_points
from ..primitives.epipolar import (decompose_essential, essential_from_pose, sampson_sq,
                                   symmetric_epipolar_sq, triangulate)
from ..solvers.batch import prepare_batch
from ..solvers.bundle import MIN_MATCHES_BA, bundle_adjust_two_view
from ..solvers.linear import MIN_MATCHES_8PT, weighted_eight_point
from .base import matched_points, two_view_geometry
from .opencv import essential_ransac

W8PT_INLIER_FACTOR = 3.0  # the paper reports inliers at 3 px: 3 x threshold_px (1 px by default)
IRLS_ITERATIONS = 10  # w8pt-irls: Cauchy reweighting steps, scale threshold_px / mean focal


@dataclass
class RelativePose:
    """R [B, 3, 3], t [B, 3] (unit), E [B, 3, 3] and weights [B, M] used in the last solve;
    in_front [B, M]: matches triangulated in front of both cameras (no batch dim for one pair)."""

    R: Tensor
    t: Tensor
    E: Tensor
    weights: Tensor
    in_front: Tensor


def relative_pose_w8pt(x0: Tensor, x1: Tensor, weights: Tensor | None = None,
                       mask: Tensor | None = None, *, irls_iterations: int = 0,
                       irls_scale: float = 1e-3) -> RelativePose:
    """Relative pose by the weighted eight-point + cheirality selection (differentiable).

    x0, x1: [B, M, 2] (or [M, 2]) normalised points; weights: [B, M] confidences; mask: [B, M].
    irls_iterations: 0 is the paper's estimator (one weighted solve). Our addition, k > 0:
    k re-solves, each with weights = confidence / (1 + (s / irls_scale)^2), s the Sampson
    distance (normalised units) to the previous E (Cauchy IRLS), which suppresses outliers
    the plain weighted least squares cannot. irls_scale: about the noise level in normalised
    units (e.g. 1 px / focal). Differentiable through all iterations.
    """
    x0, x1, w, mask, batched = prepare_batch(x0, x1, weights, mask)
    E = weighted_eight_point(x0, x1, w, mask)
    w_used = w
    for _ in range(int(irls_iterations)):
        w_used = w / (1 + sampson_sq(E[:, None], x0, x1) / irls_scale ** 2)
        E = weighted_eight_point(x0, x1, w_used, mask)
    R, t, front = decompose_essential(E, x0, x1, w_used * mask.to(w.dtype), mask)
    out = RelativePose(R, t, essential_from_pose(R, t), w_used, front)
    if not batched:
        out = RelativePose(*(v[0] for v in (out.R, out.t, out.E, out.weights, out.in_front)))
    return out


def _normalised(kpts0, kpts1, K0, K1, scores):
    kpts0, kpts1 = matched_points(kpts0, kpts1)
    scores = np.ones(len(kpts0)) if scores is None else np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) != len(kpts0):
        raise ValueError(f"scores must have one value per match ({len(kpts0)}), got {len(scores)}")
    return normalize_points(kpts0, K0), normalize_points(kpts1, K1), np.clip(scores, 0.0, None)


def _bundle_adjust(x0, x1, w, R, t):
    """BA of (R, t) on the given normalised matches; None when too few matches are usable."""
    x0t, x1t, wt = torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(w)
    Rt, tt = torch.as_tensor(R, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    _, d0, d1 = triangulate(x0t, x1t, Rt, tt / tt.norm())
    if int(((d0 > 0) & (d1 > 0) & (wt > 0)).sum()) < MIN_MATCHES_BA:
        return None
    ba = bundle_adjust_two_view(x0t, x1t, Rt, tt, wt)
    if not (torch.isfinite(ba.R).all() and torch.isfinite(ba.t).all()):
        return None
    return ba.R.numpy(), ba.t.numpy()


def _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine: bool, irls: bool = False):
    x0, x1, w = _normalised(kpts0, kpts1, K0, K1, scores)
    if int((w > 0).sum()) < MIN_MATCHES_8PT:
        return None
    focal = mean_focal(K0, K1, superglue=True)
    out = relative_pose_w8pt(torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(w),
                             irls_iterations=IRLS_ITERATIONS if irls else 0,
                             irls_scale=threshold_px / focal)
    R, t = out.R.numpy(), out.t.numpy()
    if irls:   # the BA uses the robust weights (confidence x Cauchy weight of the last step)
        w = out.weights.numpy()
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        return None
    if refine:
        refined = _bundle_adjust(x0, x1, w, R, t)
        if refined is not None:
            R, t = refined
    _, d0, d1 = triangulate(torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(R),
                            torch.from_numpy(t))
    front = ((d0 > 0) & (d1 > 0)).numpy()
    E = essential_from_pose(R, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        close = np.sqrt(symmetric_epipolar_sq(E, x0, x1)) <= W8PT_INLIER_FACTOR * threshold_px / focal
    return two_view_geometry("essential", E, close & front, R, t)


def essential_w8pt(kpts0, kpts1, K0, K1, *, threshold_px: float = 1.0, scores=None, seed: int = 0):
    """Confidence-weighted eight-point on all matches, as in the paper (no robust loop);
    None below 8 matches with positive score."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=False)


def essential_w8pt_ba(kpts0, kpts1, K0, K1, *, threshold_px: float = 1.0, scores=None,
                      seed: int = 0):
    """``w8pt`` refined by 10 iterations of the confidence-weighted two-view BA on all matches."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=True)


def essential_w8pt_irls(kpts0, kpts1, K0, K1, *, threshold_px: float = 1.0, scores=None,
                        seed: int = 0):
    """Our addition to the paper: ``w8pt`` followed by 10 IRLS re-solves, each weighting a
    match by its confidence times the Cauchy weight 1 / (1 + (s / sigma)^2) of its Sampson
    distance s to the previous E, sigma = threshold_px / mean focal."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=False, irls=True)


def essential_w8pt_irls_ba(kpts0, kpts1, K0, K1, *, threshold_px: float = 1.0, scores=None,
                           seed: int = 0):
    """``w8pt-irls`` refined by the BA with the final IRLS weights (so outliers stay
    down-weighted in the BA too)."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=True, irls=True)


def essential_ransac_ba(kpts0, kpts1, K0, K1, *, threshold_px: float = 1.0, scores=None,
                        seed: int = 0):
    """OpenCV RANSAC (``ransac``), then the two-view BA on its inliers weighted by ``scores``.
    The inlier mask is RANSAC's."""
    first = essential_ransac(kpts0, kpts1, K0, K1, threshold_px=threshold_px, seed=seed)
    if first is None:
        return None
    x0, x1, w = _normalised(kpts0, kpts1, K0, K1, scores)
    inl = first.inliers.numpy()
    refined = _bundle_adjust(x0[inl], x1[inl], w[inl], first.R.numpy(), first.t.numpy())
    if refined is None:
        return first
    R, t = refined
    return two_view_geometry("essential", essential_from_pose(R, t), inl, R, t)
