"""Does a learned AC-rejection network help AffineGlue? Trained on ground truth, measured on
held-out pairs (StereoGlue describes such a network but has not published it).

    python benchmarks/ac_rejection.py [--max-keypoints 2048] [--epochs 300]

Data: AffineGlue's candidate pools (DISK + AffNet frames, LightGlue log-assignment top-3) on
the Strecha fountain pairs and the ScanNet sample; a candidate is an inlier when its epipolar
error under the ground-truth pose is < 5e-4 (SuperGlue's precision criterion).
Per candidate, geometric features only (no pixels): LightGlue's probability and its log, the
rank in the pool and the ratio to the pool's best, the AC's log scale change, anisotropy and
rotation (cos, sin), and the candidate's distance in px to where the affine map fitted to its
matched neighbours puts it (local consistency, as AdaLAM). A small MLP (10 -> 32 -> 32 -> 1,
seeded) is trained on the Strecha pairs with an even index and tested on the odd ones
(held out) and on ScanNet (another domain).
Use: its probability replaces the matcher's score as AffineGlue's ordering (hypotheses and
the order of candidates within each pool, StereoGlue's "next best match" ordering).
Printed: classifier average precision; pose AUC, hypotheses and estimation time per pair with
the matcher's scores vs the network's, with and without the LO-RANSAC start, at the default
hypothesis budget and at a small one (50).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from matchlab.cache import use_shared_mirrors

REPO = Path(__file__).resolve().parents[1]
use_shared_mirrors(REPO.parent / "shared")


def candidate_features(kp0, kp1, cand, probs, acs, matches0) -> np.ndarray:
    """[N0, k, 10] features of each (source, candidate); see the module docstring."""
    k = cand.shape[1]
    p = np.clip(probs, 1e-6, 1.0)
    rank = np.broadcast_to(np.arange(k) / max(k - 1, 1), cand.shape)
    ratio = p / p[:, :1]
    with np.errstate(all="ignore"):
        det = np.linalg.det(acs)
        sv = np.linalg.svd(np.nan_to_num(acs), compute_uv=False)
        scale = 0.5 * np.log(np.abs(det) + 1e-12)
        aniso = np.log((sv[..., 0] + 1e-9) / (sv[..., 1] + 1e-9))
        angle = np.arctan2(acs[..., 1, 0] - acs[..., 0, 1], acs[..., 0, 0] + acs[..., 1, 1])
    local = local_consistency(kp0, kp1, cand, matches0)
    f = np.stack([p, np.log(p), rank, ratio, scale, aniso, np.cos(angle), np.sin(angle),
                  np.log1p(local), (local < 5).astype(float)], -1)
    return np.nan_to_num(f, nan=0.0, posinf=10.0, neginf=-10.0)


def local_consistency(kp0, kp1, cand, matches0, num_neighbours: int = 8) -> np.ndarray:
    """[N0, k] px distance of each candidate from the least-squares affine prediction of its
    source's matched neighbours (inf where there is none)."""
    from matchlab.geometry.primitives.affine import fit_affine, nearest_matched

    out = np.full(cand.shape, np.inf)
    k = min(num_neighbours, int((matches0 >= 0).sum()) - 1)
    if k < 3:
        return out
    nbr = nearest_matched(kp0, matches0, np.arange(len(kp0)), k)
    A, b = fit_affine(kp0[nbr], kp1[matches0[nbr]], np.ones(nbr.shape))
    pred = (A @ kp0[..., None])[..., 0] + b
    dist = np.linalg.norm(kp1[np.clip(cand, 0, None)] - pred[:, None], axis=2)
    return np.where((cand >= 0) & np.isfinite(dist), dist, out)


def collect(dataset, extractor, matcher, cache):
    """Per pair: dict with pools, features, labels and the ground truth."""
    from matchlab.datasets import dataset_path
    from matchlab.datasets.readers import pose_pairs
    from matchlab.evaluation.pose import POSE_PROTOCOLS, load_resized
    from matchlab.evaluation.metrics import epipolar_error
    from matchlab.geometry.primitives.affine import pool_affines
    from matchlab.geometry.primitives.camera import scale_intrinsics

    protocol = POSE_PROTOCOLS[dataset]
    images = dataset_path(dataset) / "images"
    out = []
    for pair in pose_pairs(dataset):
        feats = []
        for name in (pair.name0, pair.name1):
            key = (dataset, name)
            if key not in cache:
                image, s = load_resized(images / name, protocol.size, protocol.interpolation,
                                        extractor.grayscale)
                cache[key] = (extractor(image), s)
            feats.append(cache[key])
        (f0, s0), (f1, s1) = feats
        K0, K1 = scale_intrinsics(pair.K0, s0), scale_intrinsics(pair.K1, s1)
        cand, probs, base = matcher._pools([(f0, f1)])[0]
        cand, probs = cand.numpy().astype(np.int64), probs.numpy().astype(np.float64)
        matches0 = base.matches0.numpy()
        cand = np.where((matches0 > -1)[:, None], cand, -1)  # AffineGlue's sources="matched"
        kp0 = f0.keypoints.numpy().astype(np.float64)
        kp1 = f1.keypoints.numpy().astype(np.float64)
        acs = pool_affines(f0.lafs.numpy(), f1.lafs.numpy(), cand)
        valid = cand >= 0
        src, slot = np.nonzero(valid)
        label = np.zeros(cand.shape, dtype=bool)
        if len(src):
            label[src, slot] = epipolar_error(kp0[src], kp1[cand[src, slot]], pair.T_0to1, K0, K1) < 5e-4
        out.append(dict(name=f"{pair.name0} {pair.name1}", kp0=kp0, kp1=kp1, cand=cand, probs=probs,
                        acs=acs, valid=valid, label=label, K0=K0, K1=K1, T=pair.T_0to1,
                        x=candidate_features(kp0, kp1, cand, probs, acs, matches0)))
    return out


class RejectionNet(torch.nn.Module):
    def __init__(self, dim: int = 10, width: int = 32):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(dim, affine=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.LeakyReLU(),
                                       torch.nn.Linear(width, width), torch.nn.LeakyReLU(),
                                       torch.nn.Linear(width, 1))

    def forward(self, x):
        return self.mlp(self.norm(x))[..., 0]


def train(pairs, epochs: int, seed: int = 0) -> RejectionNet:
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([p["x"][p["valid"]] for p in pairs])).float()
    y = torch.from_numpy(np.concatenate([p["label"][p["valid"]] for p in pairs])).float()
    net = RejectionNet(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    pos = float(y.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / max(pos, 1e-6)))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 4096):
            idx = perm[i:i + 4096]
            opt.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def predict(net, pair) -> np.ndarray:
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(pair["x"].reshape(-1, pair["x"].shape[-1])).float()))
    return p.numpy().reshape(pair["cand"].shape).astype(np.float64)


def average_precision(scores, labels) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    if hits.sum() == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def estimate(pairs, scores_of, **kw):
    from matchlab.evaluation.metrics import error_auc
    from matchlab.evaluation.metrics import pose_error
    from matchlab.geometry.robust.ac_ransac import estimate_essential_ac

    errors, hyps, start = [], [], time.perf_counter()
    for p in pairs:
        scores = np.where(p["valid"], scores_of(p), -np.inf)
        res = estimate_essential_ac(p["kp0"], p["kp1"], p["cand"], p["acs"], p["K0"], p["K1"],
                                    scores, threshold_px=1.0, **kw)
        errors.append(np.inf if res is None else pose_error(p["T"], res.R, res.t))
        hyps.append(0 if res is None else res.hypotheses)
    auc = error_auc(np.array(errors), (2, 5, 10))
    return [100 * a for a in auc] + [float(np.mean(hyps)), (time.perf_counter() - start) / len(pairs)]


def main() -> None:
    from matchlab.registry import load_extractor, load_matcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    extractor = load_extractor("disk", max_keypoints=args.max_keypoints, resize=None, lafs="affnet")
    matcher = load_matcher("affineglue", base="lightglue", features="disk", model="essential")
    cache: dict = {}
    with torch.inference_mode():
        strecha = collect("strecha_fountain_P11", extractor, matcher, cache)
        scannet = collect("superglue_scannet_sample", extractor, matcher, cache)
    train_pairs, held_out = strecha[0::2], strecha[1::2]
    start = time.perf_counter()
    net = train(train_pairs, args.epochs)
    print(f"trained on {len(train_pairs)} Strecha pairs "
          f"({sum(int(p['valid'].sum()) for p in train_pairs)} candidates) in "
          f"{time.perf_counter() - start:.0f} s")

    print("\n| test set | candidates | inlier rate | AP LightGlue prob. | AP network |")
    print("|---|---|---|---|---|")
    for name, pairs in (("Strecha held-out", held_out), ("ScanNet", scannet)):
        v = np.concatenate([p["valid"].ravel() for p in pairs])
        lab = np.concatenate([p["label"].ravel() for p in pairs])[v]
        lg = np.concatenate([p["probs"].ravel() for p in pairs])[v]
        nn = np.concatenate([predict(net, p).ravel() for p in pairs])[v]
        print(f"| {name} | {v.sum()} | {lab.mean():.3f} | {average_precision(lg, lab):.3f} | "
              f"{average_precision(nn, lab):.3f} |")

    print("\n| test set | ordering | LO-RANSAC start | budget | AUC@2 | AUC@5 | AUC@10 | hypotheses | s per pair |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pairs in (("Strecha held-out", held_out), ("ScanNet", scannet)):
        for start_on in (True, False):
            for budget in ((100, 2000), (10, 50)):
                for label, scores_of in (("LightGlue", lambda p: p["probs"]),
                                         ("network", lambda p: predict(net, p))):
                    r = estimate(pairs, scores_of, lo_ransac_seed=start_on,
                                 min_hypotheses=budget[0], max_hypotheses=budget[1])
                    print(f"| {name} | {label} | {'on' if start_on else 'off'} | {budget[1]} | "
                          + " | ".join(f"{v:.2f}" for v in r[:3]) + f" | {r[3]:.0f} | {r[4]:.2f} |",
                          flush=True)


if __name__ == "__main__":
    main()
