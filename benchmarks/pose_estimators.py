"""Relative-pose estimators on real matches: AUC of the pose error and time per pair.

    python benchmarks/pose_estimators.py                          # ScanNet sample + Strecha, SP+SG
    python benchmarks/pose_estimators.py --datasets scannet --seeds 5

Every estimator of `matchlab.geometry.pose_estimators.POSE_ESTIMATORS` (ransac, lo-ransac,
w8pt, w8pt+ba, ransac+ba, w8pt-irls, w8pt-irls+ba) runs on the same matches: features and
matches are computed once per (dataset, matcher) and kept in memory. The random estimators
(RANSAC-based) run with --seeds seeds and their AUC is the mean of the per-seed AUCs; the w8pt variants are deterministic and run once.
Baseline: `ransac`, the SuperGlue protocol, in the same run.

Settings:
- superglue_scannet_sample (15 pairs): the official SuperGlue evaluation (match_pairs.py):
  images decoded grayscale by cv2 and resized to 640x480 with cv2.resize, K scaled;
  SuperPoint nms 4, threshold 0.005, 1024 keypoints; SuperGlue indoor, 20 Sinkhorn
  iterations, match threshold 0.2; RANSAC threshold 1 px.
- strecha_fountain_P11 (55 pairs, 3072x2048): resized to long side --strecha-size (1024 by
  default) with cv2.INTER_AREA (antialiased), keypoints and K in that frame; SuperPoint
  nms 4, threshold 0.005, 2048 keypoints; SuperGlue outdoor, 20 Sinkhorn iterations,
  match threshold 0.2; RANSAC 1 px.
- `lightglue` (DISK + LightGlue), when matchlab.registry has it: DISK with 1024 (ScanNet,
  640x480) / 2048 (Strecha) keypoints, LightGlue with its defaults.
Time per pair: wall and CPU (process) time of one estimator call, mean over pairs and seeds,
with --threads torch/OpenCV threads (1 by default: the problems are small, and intra-op
threading mostly adds synchronisation, badly so on a busy machine); the load average is
printed before and after, since wall times need an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from matchlab import load_extractor, load_matcher
from matchlab.datasets import dataset_path, pose_pairs
from matchlab.geometry.pose_estimators import POSE_ESTIMATORS
from matchlab.geometry.relative_pose import pose_auc, pose_error, scale_intrinsics
from matchlab.registry import MATCHERS

DATASETS = {"scannet": "superglue_scannet_sample", "strecha": "strecha_fountain_P11"}
THRESHOLDS = {"scannet": (5, 10, 20), "strecha": (1, 2, 5, 10, 20)}
DETERMINISTIC = {"w8pt", "w8pt+ba", "w8pt-irls", "w8pt-irls+ba"}


@dataclass
class PairMatches:
    kpts0: np.ndarray     # [M, 2] pixels of the evaluation frame
    kpts1: np.ndarray
    scores: np.ndarray    # [M] match confidences
    K0: np.ndarray        # [3, 3] intrinsics of the evaluation frame
    K1: np.ndarray
    T_0to1: np.ndarray


def _models(matcher: str, dataset: str):
    if matcher == "superglue":
        n = 1024 if dataset == "scannet" else 2048
        ext = load_extractor("superpoint", resize=None, max_keypoints=n, nms_radius=4,
                             detection_threshold=0.005)
        weights = "indoor" if dataset == "scannet" else "outdoor"
        return ext, load_matcher("superglue", weights=weights, sinkhorn_iterations=20,
                                 match_threshold=0.2)
    if matcher == "lightglue":
        n = 1024 if dataset == "scannet" else 2048
        return (load_extractor("disk", resize=None, max_keypoints=n),
                load_matcher("lightglue", features="disk"))
    raise ValueError(f"unknown matcher {matcher!r}")


def compute_matches(dataset: str, matcher: str, strecha_size: int) -> list[PairMatches]:
    """Features (once per image) and matches (once per pair) in the evaluation frame."""
    name = DATASETS[dataset]
    root = dataset_path(name)
    pairs = pose_pairs(name)
    ext, match = _models(matcher, dataset)
    gray = matcher == "superglue"
    cache: dict[str, tuple] = {}

    def features(image_name):
        if image_name not in cache:
            flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
            image = cv2.imread(str(root / "images" / image_name), flag)
            h, w = image.shape[:2]
            if dataset == "scannet":
                size = (640, 480)
                resized = cv2.resize(image, size)          # official: bilinear, no antialias
            else:
                s = strecha_size / max(w, h)
                size = (round(w * s), round(h * s))
                resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if not gray:
                resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
            tensor = torch.from_numpy(resized.astype(np.float32) / 255.0)
            tensor = tensor[None] if gray else tensor.permute(2, 0, 1)
            with torch.inference_mode():
                cache[image_name] = (ext(tensor), (size[0] / w, size[1] / h))
        return cache[image_name]

    out = []
    for pair in pairs:
        (f0, s0), (f1, s1) = features(pair.name0), features(pair.name1)
        with torch.inference_mode():
            m = match(f0, f1)
        idx = m.pairs().numpy()
        out.append(PairMatches(f0.keypoints.numpy()[idx[:, 0]].astype(np.float64),
                               f1.keypoints.numpy()[idx[:, 1]].astype(np.float64),
                               m.matched_scores().numpy().astype(np.float64),
                               scale_intrinsics(pair.K0, s0), scale_intrinsics(pair.K1, s1),
                               pair.T_0to1))
    return out


def evaluate(pairs: list[PairMatches], estimator: str, seeds: list[int], thresholds,
             threshold_px: float = 1.0):
    """(AUC per threshold in %, mean over seeds; per-pair errors [seeds, pairs]; wall ms per
    pair; CPU ms per pair)."""
    fn = POSE_ESTIMATORS[estimator]
    runs = seeds[:1] if estimator in DETERMINISTIC else seeds
    errors = np.full((len(runs), len(pairs)), math.inf)
    elapsed = cpu = 0.0
    for i, seed in enumerate(runs):
        for j, p in enumerate(pairs):
            start, start_cpu = time.perf_counter(), time.process_time()
            est = fn(p.kpts0, p.kpts1, p.K0, p.K1, threshold_px=threshold_px, scores=p.scores, seed=seed)
            elapsed += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            if est is not None:
                errors[i, j] = pose_error(p.T_0to1, est.R, est.t)
    auc = np.mean([pose_auc(e, thresholds) for e in errors], 0) * 100
    return auc, errors, 1000 * elapsed / errors.size, 1000 * cpu / errors.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--matchers", nargs="+", default=None,
                        help="default: superglue, plus lightglue when the registry has it")
    parser.add_argument("--estimators", nargs="+", default=list(POSE_ESTIMATORS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strecha-size", type=int, default=1024)
    parser.add_argument("--per-pair", action="store_true", help="print per-pair errors too")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads of the estimators")
    args = parser.parse_args()
    matchers = args.matchers or (["superglue"] + (["lightglue"] if "lightglue" in MATCHERS else []))
    seeds = list(range(args.seeds))
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, estimator threads {args.threads}, "
          f"load {os.getloadavg()[0]:.2f}")

    cached = {}
    for dataset in args.datasets:
        for matcher in matchers:
            key = (dataset, matcher, args.strecha_size if dataset == "strecha" else None)
            if key not in cached:
                start = time.perf_counter()
                cached[key] = compute_matches(dataset, matcher, args.strecha_size)
                print(f"{dataset}/{matcher}: matches in {time.perf_counter() - start:.0f} s", flush=True)

    torch.set_num_threads(args.threads)   # for the estimators (matching used the default)
    cv2.setNumThreads(args.threads)
    for dataset in args.datasets:
        ths = THRESHOLDS[dataset]
        for matcher in matchers:
            pairs = cached[(dataset, matcher, args.strecha_size if dataset == "strecha" else None)]
            counts = [len(p.scores) for p in pairs]
            print(f"\n{DATASETS[dataset]} / {matcher}: {len(pairs)} pairs, matches per pair "
                  f"median {int(np.median(counts))} (min {min(counts)}), seeds {len(seeds)}")
            header = ("| estimator | " + " | ".join(f"AUC@{t}" for t in ths)
                      + " | failed pairs | ms/pair wall | ms/pair CPU |")
            print(header)
            print("|" + "---|" * (len(ths) + 4))
            per_pair = {}
            for estimator in args.estimators:
                auc, errors, ms, cpu_ms = evaluate(pairs, estimator, seeds, ths)
                per_pair[estimator] = errors
                fails = int(np.isinf(errors).sum()) / len(errors)
                print(f"| {estimator} | " + " | ".join(f"{a:.1f}" for a in auc)
                      + f" | {fails:.1f} | {ms:.1f} | {cpu_ms:.1f} |", flush=True)
            if args.per_pair:
                print("per-pair errors (deg; median over seeds):")
                for estimator, errors in per_pair.items():
                    print(f"  {estimator:10s}", " ".join(f"{e:6.2f}" for e in np.median(errors, 0)))
    print(f"\nload {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
