"""Robust two-view estimation: one estimator protocol (`base`), one module per backend
(`opencv`, `pycolmap`, `weighted`: confidence-weighted 8-point / BA in torch, `ac_ransac`:
guided estimation from affine-correspondence pools) and ONE name table, `ESTIMATORS`, of the
estimators that take matched points (used by the evaluation and the command line):

    ESTIMATORS[model][name](kpts0, kpts1, K0, K1, threshold_px=..., scores=..., seed=...)
        -> matchlab.types.TwoViewGeometry | None

model: "homography" (pixels) or "essential" (needs the intrinsics K0, K1).
"""
from __future__ import annotations

from ...errors import ConfigError
from . import opencv, pycolmap, weighted
from .base import Estimator

ESTIMATORS: dict[str, dict[str, Estimator]] = {
    "homography": {
        "ransac": opencv.homography_ransac,
        "lo-ransac": pycolmap.homography_lo_ransac,
    },
    "essential": {
        "ransac": opencv.essential_ransac,
        "lo-ransac": pycolmap.essential_lo_ransac,
        "w8pt": weighted.essential_w8pt,
        "w8pt+ba": weighted.essential_w8pt_ba,
        "ransac+ba": weighted.essential_ransac_ba,
        "w8pt-irls": weighted.essential_w8pt_irls,
        "w8pt-irls+ba": weighted.essential_w8pt_irls_ba,
    },
}


def get_estimator(model: str, name: str) -> Estimator:
    """The estimator `name` of `model` ("homography" or "essential"); ConfigError listing the
    available names otherwise."""
    if model not in ESTIMATORS:
        raise ConfigError(f"unknown model {model!r}; available: {', '.join(ESTIMATORS)}")
    if name not in ESTIMATORS[model]:
        raise ConfigError(f"unknown {model} estimator {name!r}; available: "
                          f"{', '.join(ESTIMATORS[model])}")
    return ESTIMATORS[model][name]
