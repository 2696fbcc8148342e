"""Homography benchmark (oxford_graf, evd): match precision and homography AUC.

For each image pair with a ground-truth homography H (x1 ~ H x0):
- precision: fraction of matches whose point in image 1 lies within `precision_px` of H(x0);
- homography accuracy: a robust estimate from the matches, scored by the mean distance
  between the image-0 corners mapped by the estimate and by H (LightGlue's HPatches
  protocol); AUC of that corner error at 1 / 3 / 5 px (failures count as infinite error).
"""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from ..geometry.estimators import HOMOGRAPHY_ESTIMATORS
from ..geometry.homography import corner_error, reprojection_errors
from .metrics import error_auc


def evaluate_homography(dataset: str, extractor, matcher, estimator: str = "ransac",
                        ransac_px: float = 3.0, precision_px: float = 3.0,
                        thresholds_px=(1, 3, 5), seed: int = 0, progress: bool = True) -> dict:
    """Run `extractor` + `matcher` over every pair of `dataset`; returns per-pair rows and means."""
    from ..datasets.readers import homography_pairs

    estimate = HOMOGRAPHY_ESTIMATORS[estimator]
    rows = []
    for pair in tqdm(homography_pairs(dataset), desc=f"homography {dataset}", disable=not progress):
        start = time.perf_counter()
        feats0, feats1 = extractor(pair.image0), extractor(pair.image1)
        t_extract = time.perf_counter() - start
        start = time.perf_counter()
        idx = matcher(feats0, feats1).pairs().numpy()
        t_match = time.perf_counter() - start
        points0 = feats0.keypoints.numpy()[idx[:, 0]].astype(np.float64)
        points1 = feats1.keypoints.numpy()[idx[:, 1]].astype(np.float64)
        errors = reprojection_errors(pair.H, points0, points1)
        H_est = estimate(points0, points1, ransac_px, seed=seed)
        corner = np.inf if H_est is None else corner_error(H_est, pair.H, feats0.image_size)
        rows.append({
            "pair": f"{pair.image0.name} -> {pair.image1.name}" if hasattr(pair.image0, "name") else str(pair.image0),
            "matches": int(len(idx)),
            "precision": float((errors < precision_px).mean()) if len(idx) else 0.0,
            "corner_error_px": float(corner),
            "time_extract_s": t_extract, "time_match_s": t_match,
        })
    aucs = error_auc([r["corner_error_px"] for r in rows], thresholds_px)
    return {
        "dataset": dataset, "estimator": estimator, "pairs": rows,
        f"precision@{precision_px:g}px": float(np.mean([r["precision"] for r in rows])),
        "matches": float(np.mean([r["matches"] for r in rows])),
        **{f"auc@{t:g}px": a for t, a in zip(thresholds_px, aucs)},
        "time_match_s": float(np.mean([r["time_match_s"] for r in rows])),
    }
