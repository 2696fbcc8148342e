"""The estimator protocol shared by every robust-estimation backend, and its input/output
helpers.

An estimator is a function

    estimate(kpts0, kpts1, K0=None, K1=None, *, threshold_px, scores=None, seed=0)
        -> TwoViewGeometry | None

kpts0, kpts1: [M, 2] matched pixel coordinates; K0, K1: [3, 3] intrinsics (needed by the
essential-matrix estimators, ignored by the homography ones); threshold_px: inlier threshold
in pixels; scores: [M] match confidences in [0, 1] (used by the confidence-weighted
estimators, ignored by the others); seed: makes the run repeatable. It returns the shared
`matchlab.types.TwoViewGeometry` (float64 tensors; `inliers` [M] over the input matches),
or None when no model could be found (too few matches, degenerate input).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ...errors import ShapeError


class Estimator(Protocol):
    def __call__(self, kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray | None = None,
                 K1: np.ndarray | None = None, *, threshold_px: float = ...,
                 scores: np.ndarray | None = None, seed: int = 0): ...


def matched_points(kpts0, kpts1) -> tuple[np.ndarray, np.ndarray]:
    """Two [N, 2] float64 arrays of matched points; ShapeError (a ValueError) when their
    lengths differ."""
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    if len(kpts0) != len(kpts1):
        raise ShapeError(f"kpts0 and kpts1 must have the same length, got {len(kpts0)} and {len(kpts1)}")
    return kpts0, kpts1


def two_view_geometry(model: str, matrix, inliers, R=None, t=None):
    """A `TwoViewGeometry` from numpy (or tensor) values: float64 matrices, bool inliers."""
    import torch

    from ...types import TwoViewGeometry

    as64 = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float64))
    return TwoViewGeometry(model, as64(matrix), torch.as_tensor(np.asarray(inliers, dtype=bool)),
                           as64(R), as64(t))
