"""AffineGlue measurements: affine-frame accuracy, and AffineGlue vs the RANSAC baselines.

    python benchmarks/affineglue.py frames [--dataset oxford_graf] [--pairs 3] [--max-keypoints 512]
    python benchmarks/affineglue.py homography [--datasets evd oxford_graf] [--base nn]
    python benchmarks/affineglue.py pose [--datasets superglue_scannet_sample strecha_fountain_P11]

frames: for each scale source (fixed radius vs scale selection), AffNet with / without OriNet,
and SIFT's own frames, the affine correspondences A = A1 A0^-1 of ground-truth correspondences
(keypoints within 2 px of H(x), mutual) are compared with the Jacobian J of the true homography
at x: median relative error |A - J|_F / |J|_F, median |log2| scale-ratio error, median
rotation error (deg), and the fraction of ACs within 20 % of J.

homography / pose: the same features and candidate pools go to AffineGlue and, as one-to-one
matches (the base matcher's own matches), to HOMOGRAPHY_ESTIMATORS / POSE_ESTIMATORS
("ransac": OpenCV, "lo-ransac": pycolmap). Printed: AUC of the corner error at 1/3/5 px, or
of the pose error at 1/2/5/10/20 deg, and the estimation time per pair (features and matching
excluded, the same for all).
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
    from matchlab.geometry.homography import warp_points

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
    from matchlab import load_extractor
    from matchlab.datasets.readers import homography_pairs
    from matchlab.extractors.frames import AffineFrames, to_gray
    from matchlab.geometry.affine import affine_from_lafs, homography_jacobian
    from matchlab.images import to_tensor

    pairs = homography_pairs(args.dataset)[:args.pairs]
    sp = load_extractor("superpoint", resize=None, max_keypoints=args.max_keypoints)
    sift = load_extractor("sift", resize=None, max_keypoints=args.max_keypoints)
    configs = [("superpoint", "affnet", 16.0), ("superpoint", "affnet", 32.0),
               ("superpoint", "affnet", "log"), ("superpoint", "affnet-upright", 32.0),
               ("superpoint", "affnet-upright", "log"), ("sift", None, None),
               ("sift", "affnet", None)]
    rows: dict[tuple, list] = {c: [] for c in configs}
    frame_models = {}
    timing: dict[tuple, float] = {}
    for pair in pairs:
        images = [pair.image0, pair.image1]
        feats = {"superpoint": [sp(im) for im in images], "sift": [sift(im) for im in images]}
        grays = [to_gray(to_tensor(im, True)[None]) for im in images]
        for cfg in configs:
            det, mode, scale = cfg
            f0, f1 = feats[det]
            if mode is None:
                lafs = [f0.lafs, f1.lafs]
            else:
                key = (mode, scale)
                if key not in frame_models:
                    frame_models[key] = AffineFrames(mode, scale)
                start = time.perf_counter()
                lafs = [frame_models[key](g, f.keypoints, f.lafs) for g, f in zip(grays, (f0, f1))]
                timing[cfg] = timing.get(cfg, 0) + (time.perf_counter() - start) / (len(f0) + len(f1))
            kp0, kp1 = f0.keypoints.numpy(), f1.keypoints.numpy()
            idx = gt_correspondences(pair.H, kp0, kp1)
            A = affine_from_lafs(lafs[0].numpy()[idx[:, 0]], lafs[1].numpy()[idx[:, 1]])
            J = homography_jacobian(pair.H, kp0[idx[:, 0]])
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


# --------------------------------------------------------------------- features (cached)
FEATURES = {
    # name: (extractor, conf, base matcher, base conf for homography, for indoor pose)
    "sift": ("sift", {"max_keypoints": 2048}, "nn", {}, {}),
    "superpoint-affnet": ("superpoint", {"max_keypoints": 1024, "lafs": "affnet"}, "superglue",
                          {"weights": "outdoor"}, {"weights": "indoor"}),
}


class CachedExtractor:
    """Features on disk under outputs/affineglue_bench/<features>/ (AffNet is slow on CPU)."""

    def __init__(self, name: str, **overrides):
        from matchlab import load_extractor

        det, conf = FEATURES[name][:2]
        self.extractor = load_extractor(det, **{**conf, **overrides})
        tag = name + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
        self.dir = REPO / "outputs" / "affineglue_bench" / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        self.grayscale = self.extractor.grayscale
        self.time_s: list[float] = []

    def __call__(self, image, key: str):
        path = self.dir / (key.replace("/", "_") + ".pt")
        if path.exists():
            return torch.load(path, weights_only=False)
        start = time.perf_counter()
        feats = self.extractor(image)
        self.time_s.append(time.perf_counter() - start)
        torch.save(feats, path)
        return feats


def _variants(args, model: str, base_conf: dict, base: str) -> dict:
    from matchlab import load_matcher

    common = dict(base=base, base_conf=base_conf, model=model, pool_size=args.pool_size,
                  sources=args.sources, seed=0)
    out = {f"affineglue (k={args.pool_size})": load_matcher("affineglue", **common)}
    if model == "homography":
        out[f"affineglue gravity (k={args.pool_size})"] = load_matcher(
            "affineglue", **{**common, "minimal": "gravity"})
    out["affineglue (k=1)"] = load_matcher("affineglue", **{**common, "pool_size": 1})
    return out


def _table(title: str, columns: list[str], rows: list[tuple[str, list[float], float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'method':<34} " + " ".join(f"{c:>8}" for c in columns) + f" {'ms/pair':>9} {'inliers':>8}")
    for name, aucs, ms, inl in rows:
        print(f"{name:<34} " + " ".join(f"{100 * a:8.1f}" for a in aucs) + f" {ms:9.1f} {inl:8.0f}")


def homography_benchmark(args) -> None:
    from matchlab.datasets.readers import homography_pairs
    from matchlab.evaluation.metrics import error_auc
    from matchlab.geometry.estimators import HOMOGRAPHY_ESTIMATORS
    from matchlab.geometry.homography import corner_error

    det, _, base, base_conf, _ = FEATURES[args.features]
    base = args.base or base
    ext = CachedExtractor(args.features)
    thresholds = (1, 3, 5)
    for dataset in args.datasets:
        variants = _variants(args, "homography", base_conf if base != "nn" else {}, base)
        errors: dict[str, list] = {}
        times: dict[str, list] = {}
        inliers: dict[str, list] = {}
        pairs = homography_pairs(dataset)
        for pair in pairs:
            f0 = ext(pair.image0, f"{dataset}/{pair.image0.parent.name}/{pair.image0.name}")
            f1 = ext(pair.image1, f"{dataset}/{pair.image1.parent.name}/{pair.image1.name}")
            for name, matcher in variants.items():
                (cand, sc, bm), = matcher._pools([(f0, f1)])
                start = time.perf_counter()
                m = matcher._estimate(f0, f1, cand, sc, bm, (None, None), (None, None))
                times.setdefault(name, []).append(time.perf_counter() - start)
                H = m.extras.get("H")
                errors.setdefault(name, []).append(
                    np.inf if H is None else corner_error(H.numpy(), pair.H, f0.image_size))
                inliers.setdefault(name, []).append(len(m))
            valid = bm.matches0 > -1
            p0 = f0.keypoints[valid].numpy().astype(np.float64)
            p1 = f1.keypoints[bm.matches0[valid]].numpy().astype(np.float64)
            for est_name, estimate in HOMOGRAPHY_ESTIMATORS.items():
                name = f"{base} + {est_name} ({'OpenCV' if est_name == 'ransac' else 'pycolmap'})"
                start = time.perf_counter()
                H = estimate(p0, p1, args.threshold, seed=0)
                times.setdefault(name, []).append(time.perf_counter() - start)
                errors.setdefault(name, []).append(
                    np.inf if H is None else corner_error(H, pair.H, f0.image_size))
                inliers.setdefault(name, []).append(len(p0))
        rows = [(name, error_auc(errors[name], thresholds), 1000 * np.mean(times[name]),
                 np.mean(inliers[name])) for name in errors]
        _table(f"Homography {dataset} ({len(pairs)} pairs), {args.features} + {base}, "
               f"threshold {args.threshold} px; AUC of the corner error (%); inliers: AffineGlue's "
               "one-to-one inliers, baselines: input matches", [f"@{t}px" for t in thresholds], rows)


def pose_benchmark(args) -> None:
    from matchlab.datasets import dataset_path
    from matchlab.datasets.readers import pose_pairs
    from matchlab.evaluation.metrics import error_auc
    from matchlab.evaluation.pose import POSE_PROTOCOLS, load_resized
    from matchlab.geometry.pose_estimators import POSE_ESTIMATORS
    from matchlab.geometry.relative_pose import pose_error, scale_intrinsics

    det, _, base, base_conf_out, base_conf_in = FEATURES[args.features]
    base = args.base or base
    ext = CachedExtractor(args.features, resize=None)
    thresholds = (1, 2, 5, 10, 20)
    for dataset in args.datasets:
        protocol = POSE_PROTOCOLS[dataset]
        base_conf = {} if base == "nn" else (base_conf_in if "scannet" in dataset else base_conf_out)
        variants = _variants(args, "essential", base_conf, base)
        image_dir = dataset_path(dataset) / "images"
        errors: dict[str, list] = {}
        times: dict[str, list] = {}
        inliers: dict[str, list] = {}
        pairs = pose_pairs(dataset)[:args.max_pairs]
        scales = {}

        def feats(name):
            image, scale = load_resized(image_dir / name, protocol.size, protocol.interpolation,
                                        ext.grayscale)
            scales[name] = scale
            return ext(image, f"{dataset}/{name}")

        for pair in pairs:
            f0, f1 = feats(pair.name0), feats(pair.name1)
            K0 = scale_intrinsics(pair.K0, scales[pair.name0])
            K1 = scale_intrinsics(pair.K1, scales[pair.name1])
            for name, matcher in variants.items():
                (cand, sc, bm), = matcher._pools([(f0, f1)])
                start = time.perf_counter()
                m = matcher._estimate(f0, f1, cand, sc, bm, (K0, K1), (None, None))
                times.setdefault(name, []).append(time.perf_counter() - start)
                R, t = m.extras.get("R"), m.extras.get("t")
                errors.setdefault(name, []).append(
                    np.inf if R is None else pose_error(pair.T_0to1, R.numpy(), t.numpy()))
                inliers.setdefault(name, []).append(len(m))
                if name.startswith("affineglue (k="):   # AffineGlue's matches, re-estimated
                    idx = m.pairs().numpy()
                    k0 = f0.keypoints.numpy()[idx[:, 0]].astype(np.float64)
                    k1 = f1.keypoints.numpy()[idx[:, 1]].astype(np.float64)
                    rname = f"{name} matches + lo-ransac"
                    start = time.perf_counter()
                    est = POSE_ESTIMATORS["lo-ransac"](k0, k1, K0, K1, threshold_px=protocol.threshold_px)
                    times.setdefault(rname, []).append(times[name][-1] + time.perf_counter() - start)
                    errors.setdefault(rname, []).append(
                        np.inf if est is None else pose_error(pair.T_0to1, est.R, est.t))
                    inliers.setdefault(rname, []).append(len(idx))
            valid = bm.matches0 > -1
            k0 = f0.keypoints[valid].numpy().astype(np.float64)
            k1 = f1.keypoints[bm.matches0[valid]].numpy().astype(np.float64)
            for est_name, estimate in POSE_ESTIMATORS.items():
                name = f"{base} + {est_name} ({'OpenCV' if est_name == 'ransac' else 'pycolmap'})"
                start = time.perf_counter()
                est = estimate(k0, k1, K0, K1, threshold_px=protocol.threshold_px, seed=0)
                times.setdefault(name, []).append(time.perf_counter() - start)
                errors.setdefault(name, []).append(
                    np.inf if est is None else pose_error(pair.T_0to1, est.R, est.t))
                inliers.setdefault(name, []).append(len(k0))
        rows = [(name, error_auc(errors[name], thresholds), 1000 * np.mean(times[name]),
                 np.mean(inliers[name])) for name in errors]
        _table(f"Pose {dataset} ({len(pairs)} pairs), {args.features} + {base}, threshold "
               f"{protocol.threshold_px} px, upright gravity prior; AUC of the pose error (%)",
               [f"@{t}deg" for t in thresholds], rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fr = sub.add_parser("frames")
    fr.add_argument("--dataset", default="oxford_graf")
    fr.add_argument("--pairs", type=int, default=3)
    fr.add_argument("--max-keypoints", type=int, default=512)
    for cmd, datasets in (("homography", ["evd", "oxford_graf"]),
                          ("pose", ["superglue_scannet_sample", "strecha_fountain_P11"])):
        p = sub.add_parser(cmd)
        p.add_argument("--datasets", nargs="+", default=datasets)
        p.add_argument("--features", choices=sorted(FEATURES), default="superpoint-affnet")
        p.add_argument("--base", choices=["nn", "superglue", "lightglue"], default=None)
        p.add_argument("--pool-size", type=int, default=3)
        p.add_argument("--sources", choices=["matched", "all"], default="matched")
        if cmd == "homography":
            p.add_argument("--threshold", type=float, default=3.0)
        else:
            p.add_argument("--max-pairs", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    {"frames": frames_benchmark, "homography": homography_benchmark,
     "pose": pose_benchmark}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
