"""AffineGlue's essential model with real gravity vs the upright-camera assumption, against
pycolmap LO-RANSAC on the same LightGlue matches: pose AUC on the Strecha fountain pairs.

    python benchmarks/gravity_prior.py [--noise-deg 3] [--max-keypoints 2048]

Gravity comes from the ground-truth cameras (`matchlab.datasets.readers.strecha_gravity`: the
world frame is level), optionally perturbed by a rotation of a fixed angle about a random
axis per image (seeded), as an IMU's error. Rows: LightGlue + LO-RANSAC (baseline, same
run), AffineGlue upright (with and without its LO-RANSAC start), AffineGlue with gravity
(with and without the start), and with noisy gravity.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from matchlab.cache import use_shared_mirrors

REPO = Path(__file__).resolve().parents[1]
use_shared_mirrors(REPO.parent / "shared")

DATASET = "strecha_fountain_P11"


def perturb(gravity: dict[str, np.ndarray], angle_deg: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Each direction rotated by angle_deg about a random axis orthogonal to it (seeded)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(gravity):
        g = gravity[name] / np.linalg.norm(gravity[name])
        axis = np.cross(g, rng.normal(size=3))
        axis /= np.linalg.norm(axis)
        a = np.radians(angle_deg)  # Rodrigues; axis is orthogonal to g
        out[name] = g * np.cos(a) + np.cross(axis, g) * np.sin(a)
    return out


def main() -> None:
    from matchlab.datasets.readers import strecha_gravity
    from matchlab.evaluation.pose import evaluate_pose
    from matchlab.registry import load_extractor, load_matcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--noise-deg", type=float, nargs="*", default=[3.0])
    parser.add_argument("--seeds", type=int, default=5, help="LO-RANSAC runs per pair")
    args = parser.parse_args()

    extractor = load_extractor("disk", max_keypoints=args.max_keypoints, resize=None, lafs="affnet")
    truth = strecha_gravity(DATASET)
    rows, cache = [], {}

    def run(label, matcher, estimator, gravity=None, seeds=(0,)):
        start = time.perf_counter()
        out = evaluate_pose(DATASET, extractor, matcher, estimators=(estimator,), seeds=seeds,
                            gravity=gravity, feature_cache=cache)
        s = out["estimators"][estimator]
        rows.append((label, s["auc@1deg"], s["auc@2deg"], s["auc@5deg"], s["auc@10deg"],
                     out["time_match_s"] + s["time_estimate_s"], time.perf_counter() - start))
        print(rows[-1], flush=True)

    lightglue = load_matcher("lightglue", features="disk")
    run("LightGlue + LO-RANSAC", lightglue, "lo-ransac", seeds=tuple(range(args.seeds)))
    for seed_start in (True, False):
        ag = load_matcher("affineglue", base="lightglue", features="disk", model="essential",
                          lo_ransac_seed=seed_start)
        suffix = "" if seed_start else ", no LO-RANSAC start"
        run(f"AffineGlue upright{suffix}", ag, "matcher")
        run(f"AffineGlue gravity{suffix}", ag, "matcher", gravity=truth)
        for noise in args.noise_deg:
            run(f"AffineGlue gravity + {noise:g} deg{suffix}", ag, "matcher",
                gravity=perturb(truth, noise))

    print(f"\n{DATASET}, DISK {args.max_keypoints} keypoints (AffNet frames), pose AUC in %\n")
    print("| method | AUC@1 | AUC@2 | AUC@5 | AUC@10 | s per pair | total s |")
    print("|---|---|---|---|---|---|---|")
    for label, *values in rows:
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values[:4])
              + f" | {values[4]:.2f} | {values[5]:.0f} |")


if __name__ == "__main__":
    main()
