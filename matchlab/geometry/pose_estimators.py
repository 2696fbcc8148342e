"""Robust relative-pose estimators behind one name table.

Every estimator is a pure function with the same signature:

    estimate(kpts0, kpts1, K0, K1, *, threshold_px=1.0, scores=None, seed=0) -> PoseEstimate | None

kpts0, kpts1: [M, 2] matched pixel coordinates (float64); K0, K1: [3, 3] intrinsics;
scores: [M] match confidences in [0, 1] (used by the confidence-weighted estimators, ignored
by the others); threshold_px: inlier threshold in pixels; seed: makes the run repeatable.
Returns None when no pose could be found (too few matches, degenerate input).

Names (used by `matchlab eval pose --estimator`):
- ``ransac``: OpenCV 5-point RANSAC on normalised points (the SuperGlue protocol);
- ``lo-ransac``: pycolmap's LO-RANSAC essential matrix with cheirality decomposition;
- ``w8pt``: the confidence-weighted eight-point on all matches (no RANSAC), cheirality
  selection (Roessle & Niessner 2023; `matchlab.geometry.pose`);
- ``w8pt+ba``: ``w8pt`` refined by the two-view bundle adjustment on all matches, weighted
  by the confidences (the paper's default);
- ``ransac+ba``: ``ransac``, then the bundle adjustment on the RANSAC inliers weighted by
  the confidences (the RANSAC pose is returned unchanged when fewer than 6 inliers are in
  front of both cameras);
- ``w8pt-irls``, ``w8pt-irls+ba``: our addition, not in the paper: ``w8pt`` made robust by
  iteratively reweighted least squares (confidence x Cauchy weight of the Sampson error, 10
  steps, scale threshold_px), and the BA run with those weights.
The confidence-weighted estimators use ``scores`` (all ones when None) and are
deterministic (``seed`` only reaches the RANSAC of ``ransac+ba``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .relative_pose import estimate_pose_opencv, matched_points, normalize_points


@dataclass
class PoseEstimate:
    """R: [3, 3] and t: [3] unit vector with x1 = R x0 + t (camera 0 -> camera 1);
    inliers: [M] bool over the input matches."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray


def pose_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                threshold_px: float = 1.0, scores: np.ndarray | None = None,
                seed: int = 0) -> PoseEstimate | None:
    """OpenCV RANSAC essential matrix, probability 0.99999, threshold over the mean focal."""
    result = estimate_pose_opencv(kpts0, kpts1, K0, K1, threshold_px, seed=seed)
    return None if result is None else PoseEstimate(*result)


def _pinhole(K: np.ndarray):
    import pycolmap

    K = np.asarray(K, dtype=np.float64)
    # width/height only bound the image; the estimator works on normalised rays
    return pycolmap.Camera(model="PINHOLE", width=int(2 * K[0, 2]) + 1, height=int(2 * K[1, 2]) + 1,
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])


def pose_lo_ransac(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                   threshold_px: float = 1.0, scores: np.ndarray | None = None,
                   seed: int = 0) -> PoseEstimate | None:
    """pycolmap LO-RANSAC essential matrix (threshold in pixels), decomposed by cheirality."""
    import pycolmap

    kpts0, kpts1 = matched_points(kpts0, kpts1)
    if len(kpts0) < 5:
        return None
    options = pycolmap.RANSACOptions(max_error=float(threshold_px), random_seed=int(seed),
                                     confidence=0.99999, max_num_trials=10000)
    result = pycolmap.estimate_essential_matrix(kpts0, kpts1, _pinhole(K0), _pinhole(K1), options)
    if result is None:
        return None
    pose = result["cam2_from_cam1"]
    t = np.asarray(pose.translation, dtype=np.float64)
    norm = np.linalg.norm(t)
    return PoseEstimate(np.asarray(pose.rotation.matrix(), dtype=np.float64),
                        t / norm if norm > 0 else t, np.asarray(result["inlier_mask"], dtype=bool))


# ------------------------------------------------------------------ confidence-weighted (torch)
W8PT_INLIER_FACTOR = 3.0  # the paper reports inliers at 3 px: 3 x threshold_px (1 px by default)


def _normalised(kpts0, kpts1, K0, K1, scores):
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    if len(kpts0) != len(kpts1):
        raise ValueError(f"kpts0 and kpts1 must have the same length, got {len(kpts0)} and {len(kpts1)}")
    scores = np.ones(len(kpts0)) if scores is None else np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) != len(kpts0):
        raise ValueError(f"scores must have one value per match ({len(kpts0)}), got {len(scores)}")
    return normalize_points(kpts0, K0), normalize_points(kpts1, K1), np.clip(scores, 0.0, None)


def _mean_focal(K0, K1) -> float:
    K0, K1 = np.asarray(K0, dtype=np.float64), np.asarray(K1, dtype=np.float64)
    return float(np.mean([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]]))


def _reported_inliers(x0, x1, R, t, in_front, threshold: float) -> np.ndarray:
    """Paper's inlier count: in front of both cameras and sqrt(symmetric epipolar distance)
    <= threshold (normalised units)."""
    import torch

    from .pose import essential_from_pose, symmetric_epipolar_distance

    E = essential_from_pose(torch.from_numpy(R)[None], torch.from_numpy(t)[None])
    d = symmetric_epipolar_distance(E, torch.from_numpy(x0)[None], torch.from_numpy(x1)[None])[0]
    return (d <= threshold).numpy() & np.asarray(in_front, dtype=bool)


def _bundle_adjust(x0, x1, w, R, t):
    """BA of (R, t) on the given normalised matches; None when too few matches are usable."""
    import torch

    from .pose import MIN_MATCHES_BA, bundle_adjust_two_view, triangulate

    x0t, x1t, wt = torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(w)
    Rt, tt = torch.as_tensor(R, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    _, d0, d1 = triangulate(x0t, x1t, Rt, tt / tt.norm())
    if int(((d0 > 0) & (d1 > 0) & (wt > 0)).sum()) < MIN_MATCHES_BA:
        return None
    ba = bundle_adjust_two_view(x0t, x1t, Rt, tt, wt)
    if not (torch.isfinite(ba.R).all() and torch.isfinite(ba.t).all()):
        return None
    return ba.R.numpy(), ba.t.numpy()


IRLS_ITERATIONS = 10  # w8pt-irls: Cauchy reweighting steps, scale threshold_px / mean focal


def _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine: bool,
          irls: bool = False) -> PoseEstimate | None:
    import torch

    from .pose import MIN_MATCHES_8PT, relative_pose_w8pt, triangulate

    x0, x1, w = _normalised(kpts0, kpts1, K0, K1, scores)
    if int((w > 0).sum()) < MIN_MATCHES_8PT:
        return None
    out = relative_pose_w8pt(torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(w),
                             irls_iterations=IRLS_ITERATIONS if irls else 0,
                             irls_scale=threshold_px / _mean_focal(K0, K1))
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
    threshold = W8PT_INLIER_FACTOR * threshold_px / _mean_focal(K0, K1)
    return PoseEstimate(R, t, _reported_inliers(x0, x1, R, t, front, threshold))


def pose_w8pt(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
              threshold_px: float = 1.0, scores: np.ndarray | None = None,
              seed: int = 0) -> PoseEstimate | None:
    """Confidence-weighted eight-point on all matches, as in the paper (no robust loop).
    None below 8 matches with positive score. inliers: in front of both cameras and
    sqrt(symmetric epipolar distance) <= 3 * threshold_px / mean focal (the paper's 3 px)."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=False)


def pose_w8pt_ba(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                 threshold_px: float = 1.0, scores: np.ndarray | None = None,
                 seed: int = 0) -> PoseEstimate | None:
    """``w8pt`` refined by 10 iterations of the confidence-weighted two-view BA on all matches."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=True)


def pose_w8pt_irls(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                   threshold_px: float = 1.0, scores: np.ndarray | None = None,
                   seed: int = 0) -> PoseEstimate | None:
    """Our addition to the paper: ``w8pt`` followed by 10 IRLS re-solves, each weighting a
    match by its confidence times the Cauchy weight 1 / (1 + (s / sigma)^2) of its Sampson
    error s to the previous E, sigma = threshold_px / mean focal."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=False, irls=True)


def pose_w8pt_irls_ba(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                      threshold_px: float = 1.0, scores: np.ndarray | None = None,
                      seed: int = 0) -> PoseEstimate | None:
    """``w8pt-irls`` refined by the BA with the final IRLS weights (so outliers stay
    down-weighted in the BA too)."""
    return _w8pt(kpts0, kpts1, K0, K1, threshold_px, scores, refine=True, irls=True)


def pose_ransac_ba(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, *,
                   threshold_px: float = 1.0, scores: np.ndarray | None = None,
                   seed: int = 0) -> PoseEstimate | None:
    """OpenCV RANSAC (``ransac``), then the two-view BA on its inliers weighted by ``scores``.
    The inlier mask is RANSAC's."""
    first = pose_ransac(kpts0, kpts1, K0, K1, threshold_px=threshold_px, seed=seed)
    if first is None:
        return None
    x0, x1, w = _normalised(kpts0, kpts1, K0, K1, scores)
    inl = first.inliers
    refined = _bundle_adjust(x0[inl], x1[inl], w[inl], first.R, first.t)
    if refined is None:
        return first
    return PoseEstimate(refined[0], refined[1], first.inliers)


PoseEstimator = Callable[..., "PoseEstimate | None"]

POSE_ESTIMATORS: dict[str, PoseEstimator] = {
    "ransac": pose_ransac,
    "lo-ransac": pose_lo_ransac,
    "w8pt": pose_w8pt,
    "w8pt+ba": pose_w8pt_ba,
    "ransac+ba": pose_ransac_ba,
    "w8pt-irls": pose_w8pt_irls,
    "w8pt-irls+ba": pose_w8pt_irls_ba,
}


def get_pose_estimator(name: str) -> PoseEstimator:
    if name not in POSE_ESTIMATORS:
        raise ValueError(f"unknown pose estimator {name!r}; available: {', '.join(POSE_ESTIMATORS)}")
    return POSE_ESTIMATORS[name]
