"""Homography benchmark (oxford_graf, evd): match precision and homography AUC.

For each image pair with a ground-truth homography H (x1 ~ H x0):
- precision: fraction of matches whose point in image 1 lies within `precision_px` of H(x0);
- homography accuracy: a robust estimate from the matches, scored by the mean distance
  between the image-0 corners mapped by the estimate and by H (LightGlue's HPatches
  protocol); AUC of that corner error at 1 / 3 / 5 px (failures count as infinite error).
Features are extracted once per image and matched once per pair; every estimator in
`estimators` runs on the same matches; "matcher" scores the homography the matcher
estimated itself (AffineGlue: `Matches.geometry` with model "homography").
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError
from ..geometry.primitives.homography import reprojection_errors
from ..geometry.robust import ESTIMATORS
from .metrics import corner_error, error_auc
from .pose import MATCHER_ESTIMATOR


def evaluate_homography(dataset: str, extractor, matcher, estimators: Sequence[str] = ("ransac",),
                        ransac_px: float = 3.0, precision_px: float = 3.0,
                        thresholds_px=(1, 3, 5), seed: int = 0, progress: bool = True) -> list[dict]:
    """Run `extractor` + `matcher` over every pair of `dataset`; one result dict per estimator
    (precision, mean matches, auc@Xpx as fractions, times, per-pair rows)."""
    from ..datasets.readers import homography_pairs

    unknown = [e for e in estimators if e not in ESTIMATORS["homography"] and e != MATCHER_ESTIMATOR]
    if unknown:
        raise ConfigError(f"unknown homography estimator(s) {unknown}; available: "
                         f"{', '.join(ESTIMATORS['homography'])}")
    cache: dict = {}

    def features(path):
        if path not in cache:
            cache[path] = extractor(path)
        return cache[path]

    rows = []
    for pair in tqdm(homography_pairs(dataset), desc=f"homography {dataset}", disable=not progress):
        feats0, feats1 = features(pair.image0), features(pair.image1)
        start = time.perf_counter()
        result = matcher(feats0, feats1)
        idx = result.pairs().numpy()
        t_match = time.perf_counter() - start
        points0 = feats0.keypoints.numpy()[idx[:, 0]].astype(np.float64)
        points1 = feats1.keypoints.numpy()[idx[:, 1]].astype(np.float64)
        errors = reprojection_errors(pair.H, points0, points1)
        row = {"pair": f"{pair.image0.name} -> {pair.image1.name}", "matches": int(len(idx)),
               "precision": float((errors < precision_px).mean()) if len(idx) else 0.0,
               "time_match_s": t_match, "corner_error_px": {}, "time_estimate_s": {}}
        for name in estimators:
            start = time.perf_counter()
            if name == MATCHER_ESTIMATOR:  # the matcher's own estimate (AffineGlue)
                geo = result.geometry
                H_est = (np.asarray(geo.matrix, dtype=np.float64)
                         if geo is not None and geo.model == "homography" else None)
            else:
                est = ESTIMATORS["homography"][name](points0, points1, threshold_px=ransac_px,
                                                     seed=seed)
                H_est = None if est is None else est.matrix.numpy()
            row["time_estimate_s"][name] = time.perf_counter() - start
            row["corner_error_px"][name] = (np.inf if H_est is None else
                                            corner_error(H_est, pair.H, feats0.image_size))
        rows.append(row)
    results = []
    for name in estimators:
        aucs = error_auc([r["corner_error_px"][name] for r in rows], thresholds_px)
        results.append({
            "benchmark": "homography", "dataset": dataset, "estimator": name, "pairs": rows,
            f"precision@{precision_px:g}px": float(np.mean([r["precision"] for r in rows])),
            "matches": float(np.mean([r["matches"] for r in rows])),
            **{f"auc@{t:g}px": a for t, a in zip(thresholds_px, aucs)},
            "time_match_s": float(np.mean([r["time_match_s"] for r in rows])),
            "time_estimate_s": float(np.mean([r["time_estimate_s"][name] for r in rows])),
        })
    return results
