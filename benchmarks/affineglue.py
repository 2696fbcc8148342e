"""AffineGlue measurements: accuracy of the affine frames of point detectors.

    python benchmarks/affineglue.py frames [--dataset oxford_graf] [--pairs 3] [--max-keypoints 512]

For each scale source (fixed radius vs scale selection), AffNet with / without OriNet,
SIFT's own frames, and ACs fitted to the matched neighbours (`neighbour_affines`, matches of
LightGlue for DISK, mutual NN for SIFT; timing includes the matching), the affine
correspondences A = A1 A0^-1 of ground-truth correspondences (keypoints within 2 px of H(x),
mutual) are compared with the Jacobian J of the true homography
at x: median relative error |A - J|_F / |J|_F, median |log2| scale-ratio error, median
rotation error (deg), and the fraction of ACs within 20 % of J.

AffineGlue against the RANSAC baselines is measured by `matchlab eval` (docs/affineglue.md,
"AffineGlue vs RANSAC"): `--matcher affineglue --estimator matcher` scores AffineGlue's own model, and
the base matcher with `--estimator ransac lo-ransac` gives the baselines.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from matchlab.cache import use_shared_mirrors

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
use_shared_mirrors(SHARED)


# ---------------------------------------------------------------------------------- frames
def gt_correspondences(H: np.ndarray, kp0: np.ndarray, kp1: np.ndarray, px: float = 2.0):
    from matchlab.geometry.primitives.homography import warp_points

    if len(kp0) == 0 or len(kp1) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    proj = warp_points(H, kp0)
    d = np.linalg.norm(proj[:, None] - kp1[None], axis=2)
    j = d.argmin(1)
    back = warp_points(np.linalg.inv(H), kp1)
    i_back = np.linalg.norm(back[:, None] - kp0[None], axis=2).argmin(1)
    ok = (d[np.arange(len(kp0)), j] < px) & (i_back[j] == np.arange(len(kp0)))
    return np.stack([np.nonzero(ok)[0], j[ok]], 1)


def ac_errors(A: np.ndarray, J: np.ndarray) -> dict:
    rel = np.linalg.norm(A - J, axis=(1, 2)) / np.linalg.norm(J, axis=(1, 2))
    scale = np.abs(0.5 * np.log2(np.abs(np.linalg.det(A)) / np.abs(np.linalg.det(J))))
    # rotation part of J^-1 A (identity when A == J)
    D = np.linalg.solve(J, A)
    ang = np.degrees(np.abs(np.arctan2(D[:, 1, 0] - D[:, 0, 1], D[:, 0, 0] + D[:, 1, 1])))
    return {"n": len(A), "rel": float(np.median(rel)), "scale": float(np.median(scale)),
            "rot": float(np.median(ang)), "ok20": float(np.mean(rel < 0.2))}


def frames_benchmark(args) -> None:
    from matchlab import load_extractor, load_matcher
    from matchlab.datasets.readers import homography_pairs
    from matchlab.extractors.frames import AffineFrames, to_gray
    from matchlab.geometry.primitives.affine import affine_from_lafs, neighbour_affines
    from matchlab.geometry.primitives.homography import homography_jacobian
    from matchlab.images import to_tensor

    pairs = homography_pairs(args.dataset)[:args.pairs]
    sp = load_extractor("superpoint", resize=None, max_keypoints=args.max_keypoints)
    sift = load_extractor("sift", resize=None, max_keypoints=args.max_keypoints)
    configs = [("superpoint", "affnet", 16.0), ("superpoint", "affnet", 32.0),
               ("superpoint", "affnet", "log"), ("superpoint", "affnet-upright", 32.0),
               ("superpoint", "affnet-upright", "log"), ("sift", None, None),
               ("sift", "affnet", None), ("disk", "neighbours", "lightglue"),
               ("sift", "neighbours", "nn")]
    rows: dict[tuple, list] = {c: [] for c in configs}
    frame_models = {}
    matchers = {"lightglue": load_matcher("lightglue", features="disk"), "nn": load_matcher("nn")}
    disk = load_extractor("disk", resize=None, max_keypoints=args.max_keypoints)
    timing: dict[tuple, float] = {}
    for pair in pairs:
        images = [pair.image0, pair.image1]
        feats = {"superpoint": [sp(im) for im in images], "sift": [sift(im) for im in images],
                 "disk": [disk(im) for im in images]}
        grays = [to_gray(to_tensor(im, True)[None]) for im in images]
        for cfg in configs:
            det, mode, scale = cfg
            f0, f1 = feats[det]
            kp0, kp1 = f0.keypoints.numpy(), f1.keypoints.numpy()
            idx = gt_correspondences(pair.H, kp0, kp1)
            J = homography_jacobian(pair.H, kp0[idx[:, 0]])
            if mode == "neighbours":  # fitted to the base matcher's matches around each point
                start = time.perf_counter()
                matches0 = matchers[scale](f0, f1).matches0.numpy()
                cand = np.full((len(kp0), 1), -1)
                cand[idx[:, 0], 0] = idx[:, 1]
                A = neighbour_affines(kp0, kp1, matches0, cand)[idx[:, 0], 0]
                timing[cfg] = timing.get(cfg, 0) + (time.perf_counter() - start) / (len(f0) + len(f1))
                ok = np.isfinite(A).all((1, 2))
                rows[cfg].append((pair.image1.name, ac_errors(A[ok], J[ok])))
                continue
            if mode is None:
                lafs = [f0.lafs, f1.lafs]
            else:
                key = (mode, scale)
                if key not in frame_models:
                    frame_models[key] = AffineFrames(mode, scale)
                start = time.perf_counter()
                lafs = [frame_models[key](g, f.keypoints, f.lafs) for g, f in zip(grays, (f0, f1))]
                timing[cfg] = timing.get(cfg, 0) + (time.perf_counter() - start) / (len(f0) + len(f1))
            A = affine_from_lafs(lafs[0].numpy()[idx[:, 0]], lafs[1].numpy()[idx[:, 1]])
            rows[cfg].append((pair.image1.name, ac_errors(A, J)))
    print(f"\nAffine correspondences vs the true homography's Jacobian, {args.dataset} "
          f"(median over GT correspondences; {args.max_keypoints} keypoints)")
    names = [r[0] for r in rows[configs[0]]]
    print(f"{'detector':<11} {'frames':<15} {'scale':<5} " + " ".join(f"{n:>24}" for n in names)
          + f" {'ms/1k kp':>9}")
    print(f"{'':<33} " + " ".join(f"{'n  rel  dscale  rot  ok20':>24}" for _ in names))
    for cfg in configs:
        det, mode, scale = cfg
        cells = " ".join(f"{e['n']:>4} {e['rel']:.2f} {e['scale']:.2f} {e['rot']:5.1f} {e['ok20']:.2f}"
                         .rjust(24) for _, e in rows[cfg])
        ms = f"{1e6 * timing[cfg]:9.0f}" if cfg in timing else f"{'-':>9}"
        print(f"{det:<11} {str(mode):<15} {str(scale):<5} {cells} {ms}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fr = sub.add_parser("frames")
    fr.add_argument("--dataset", default="oxford_graf")
    fr.add_argument("--pairs", type=int, default=3)
    fr.add_argument("--max-keypoints", type=int, default=512)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    frames_benchmark(args)


if __name__ == "__main__":
    main(sys.argv[1:])
