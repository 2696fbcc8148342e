"""Relative-pose benchmark (SuperGlue protocol) on the ScanNet sample and Strecha fountain-P11.

For each calibrated pair: extract features from images resized to the protocol's evaluation
size (intrinsics scaled to match), match, estimate the relative pose with each requested
estimator (`matchlab.geometry.robust.ESTIMATORS["essential"]`) and score it by the pose
error max(rotation error, translation-direction error) in degrees. Reported per estimator:
AUC of the pose error at 1/2/5/10/20 degrees in percent (the mean over `seeds` RANSAC runs),
plus precision and matching score (a match is correct when its symmetric epipolar distance
in normalised coordinates is below 5e-4, as in SuperGlue's `match_pairs.py`), matches per
pair and time per pair.

Protocols (`POSE_PROTOCOLS`):
- superglue_scannet_sample: 640x480 with cv2.resize (bilinear, no antialiasing: exactly what
  `match_pairs.py` does, so SuperPoint + SuperGlue reproduce the published numbers), 1 px;
- strecha_fountain_P11: all 55 pairs, 3072x2048 images at long side 1024 (cv2 INTER_AREA), 1 px.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import ConfigError
from ..geometry.primitives.camera import scale_intrinsics
from ..geometry.robust import get_estimator
from ..images import ImageError, array_to_tensor, target_size
from .metrics import epipolar_error, error_auc, pose_error

THRESHOLDS_DEG = (1, 2, 5, 10, 20)
# estimator name for "the model the matcher estimated itself" (AffineGlue: Matches.geometry)
MATCHER_ESTIMATOR = "matcher"


@dataclass(frozen=True)
class PoseProtocol:
    size: int | tuple[int, int]  # long side, or exact (width, height)
    interpolation: int  # cv2 flag
    threshold_px: float  # RANSAC inlier threshold at the evaluation size


POSE_PROTOCOLS = {
    "superglue_scannet_sample": PoseProtocol((640, 480), cv2.INTER_LINEAR, 1.0),
    "strecha_fountain_P11": PoseProtocol(1024, cv2.INTER_AREA, 1.0),
}


def load_resized(path, size, interpolation: int, grayscale: bool):
    """Image at `path` resized with OpenCV to `size`; returns ([C, H, W] float tensor in [0, 1],
    (sx, sy) = new size / original size)."""
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ImageError(path, "cannot be decoded")
    height, width = image.shape[:2]
    new = target_size((width, height), size)
    resized = cv2.resize(image, new, interpolation=interpolation) if new != (width, height) else image
    return array_to_tensor(resized, bgr=not grayscale, name=str(path)), (new[0] / width, new[1] / height)


def evaluate_pose(dataset: str, extractor, matcher, estimators: Sequence[str] = ("ransac",),
                  seeds: Sequence[int] = (0, 1, 2, 3, 4), threshold_px: float | None = None,
                  gravity: dict | None = None, feature_cache: dict | None = None,
                  only_pairs: Sequence[tuple[str, str]] | None = None,
                  progress: bool = True) -> dict:
    """Run `extractor` + `matcher` on every pose pair of `dataset` and score each estimator.

    The extractor must be built with resize=None: the protocol resizes the images itself.
    The matcher gets K0 / K1 (and gravity) through `match_batch`, used when its capabilities
    say so (AffineGlue); the estimator name "matcher" scores the pose it returns in
    `Matches.geometry` (R, t).
    threshold_px overrides the protocol's RANSAC threshold. gravity: {image name: down
    direction [3] in camera coordinates} for a matcher that uses gravity (missing names:
    upright). feature_cache: a dict to share extracted features between calls with the same
    extractor (benchmarks comparing matchers). only_pairs: evaluate these (name0, name1) pairs
    of the protocol only (ValueError for a pair it does not have). Returns a dict with the
    settings, one entry per estimator under "estimators" (auc@Xdeg in %, time_estimate_s) and per-pair
    rows under "pairs" (matches, precision, errors per estimator and seed).
    """
    from ..datasets import dataset_path
    from ..datasets.readers import pose_pairs
    from ..pipeline import check_gravity

    if dataset not in POSE_PROTOCOLS:
        raise ConfigError(f"no pose protocol for {dataset!r}; available: {', '.join(POSE_PROTOCOLS)}")
    if extractor.conf.get("resize") is not None:
        raise ConfigError("build the extractor with resize=None for pose evaluation: the protocol "
                         f"resizes images itself (got resize={extractor.conf['resize']!r})")
    protocol = POSE_PROTOCOLS[dataset]
    threshold = protocol.threshold_px if threshold_px is None else threshold_px
    functions = {name: None if name == MATCHER_ESTIMATOR else get_estimator("essential", name)
                 for name in estimators}
    if MATCHER_ESTIMATOR in functions and not matcher.capabilities.estimates:
        raise ConfigError(f"estimator {MATCHER_ESTIMATOR!r} takes the pose from the matcher, and "
                         f"{type(matcher).__name__} estimates none (use e.g. affineglue)")
    check_gravity(matcher, gravity)
    image_dir = dataset_path(dataset) / "images"
    pairs = pose_pairs(dataset)
    if only_pairs is not None:
        known = {(p.name0, p.name1): p for p in pairs}
        missing = [f"{a} {b}" for a, b in only_pairs if (a, b) not in known]
        if missing:
            raise ConfigError(f"{dataset} has no pose pair {', '.join(missing)}")
        pairs = [known[tuple(p)] for p in only_pairs]

    cache: dict[str, tuple] = {} if feature_cache is None else feature_cache

    def features(name: str):
        if name not in cache:
            image, scale = load_resized(image_dir / name, protocol.size, protocol.interpolation,
                                        extractor.grayscale)
            start = time.perf_counter()
            cache[name] = (extractor(image), scale, time.perf_counter() - start)
        return cache[name]

    rows = []
    for pair in tqdm(pairs, desc=f"pose {dataset}", unit="pair", disable=not progress):
        (f0, s0, _), (f1, s1, _) = features(pair.name0), features(pair.name1)
        K0, K1 = scale_intrinsics(pair.K0, s0), scale_intrinsics(pair.K1, s1)
        start = time.perf_counter()
        # a matcher that estimates the geometry itself (AffineGlue) uses the intrinsics
        g = [(gravity.get(pair.name0), gravity.get(pair.name1))] if gravity else None
        result = matcher.match_batch([(f0, f1)], intrinsics=[(K0, K1)], gravity=g)[0]
        t_match = time.perf_counter() - start
        idx = result.pairs().numpy()
        scores = result.matched_scores().numpy().astype(np.float64)
        k0 = f0.keypoints.numpy()[idx[:, 0]].astype(np.float64)
        k1 = f1.keypoints.numpy()[idx[:, 1]].astype(np.float64)
        correct = epipolar_error(k0, k1, pair.T_0to1, K0, K1) < 5e-4 if len(idx) else np.zeros(0, bool)
        row = {"pair": f"{pair.name0} {pair.name1}", "matches": int(len(idx)),
               "precision": float(correct.mean()) if len(idx) else 0.0,
               "matching_score": float(correct.sum()) / len(f0) if len(f0) else 0.0,
               "time_match_s": t_match, "errors_deg": {}, "time_estimate_s": {}}
        for name, estimate in functions.items():
            errors, start = [], time.perf_counter()
            for seed in seeds:
                if estimate is None:  # the matcher's own estimate (deterministic)
                    geo = result.geometry
                    R, t = ((None, None) if geo is None or geo.R is None
                            else (np.asarray(geo.R), np.asarray(geo.t)))
                else:
                    est = estimate(k0, k1, K0, K1, threshold_px=threshold, scores=scores, seed=seed)
                    R, t = (None, None) if est is None else (est.R, est.t)
                errors.append(math.inf if R is None else pose_error(pair.T_0to1, R, t))
            row["time_estimate_s"][name] = (time.perf_counter() - start) / len(seeds)
            row["errors_deg"][name] = errors
        rows.append(row)

    summary = {}
    for name in functions:
        errors = np.array([r["errors_deg"][name] for r in rows])  # [pairs, seeds]
        per_seed = np.array([error_auc(errors[:, i], THRESHOLDS_DEG) for i in range(len(seeds))])
        summary[name] = {**{f"auc@{t}deg": 100 * float(v) for t, v in
                            zip(THRESHOLDS_DEG, per_seed.mean(0))},
                         "time_estimate_s": float(np.mean([r["time_estimate_s"][name] for r in rows]))}
    extract_times = [t for _, _, t in cache.values()]
    return {
        "benchmark": "pose", "dataset": dataset, "num_pairs": len(rows), "seeds": list(seeds),
        "threshold_px": threshold, "gravity": bool(gravity),
        "size": protocol.size, "estimators": summary,
        "matches": float(np.mean([r["matches"] for r in rows])),
        "precision": 100 * float(np.mean([r["precision"] for r in rows])),
        "matching_score": 100 * float(np.mean([r["matching_score"] for r in rows])),
        "time_extract_s": float(np.mean(extract_times)),
        "time_match_s": float(np.mean([r["time_match_s"] for r in rows])),
        "pairs": rows,
    }
