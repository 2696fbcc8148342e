"""Which training-free global descriptor: VLAD variants (and a GeM-like mean-pooled baseline)
on the labelled mix of sample datasets (matchlab.evaluation.retrieval), same local features.

    python benchmarks/vlad_choices.py [--features sift] [--resize 1024] [--max-keypoints 4096]

Local features are extracted once into --work (kept between runs); then for each variant the
vocabulary is fitted on the collection (seeded) and the leave-one-out Recall@1/5/10 and mAP are
printed. The variant in matchlab.retrieval.select.VLAD_CONF is the one `--global vlad` uses.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from matchlab.cache import use_shared_mirrors

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
use_shared_mirrors(SHARED)

VARIANTS = [
    {"num_clusters": 16, "intra_norm": False, "power": 0.5},
    {"num_clusters": 32, "intra_norm": False, "power": 0.5},
    {"num_clusters": 64, "intra_norm": False, "power": 0.5},
    {"num_clusters": 128, "intra_norm": False, "power": 0.5},
    {"num_clusters": 64, "intra_norm": True, "power": 0.5},
    {"num_clusters": 64, "intra_norm": False, "power": 1.0},
    {"num_clusters": 64, "intra_norm": True, "power": 1.0},
]


def mean_pooled(descriptors: list[np.ndarray]) -> np.ndarray:
    """Baseline: the L2-normalised mean of the (signed square-rooted) local descriptors."""
    out = []
    for d in descriptors:
        v = np.sign(d.mean(0)) * np.sqrt(np.abs(d.mean(0))) if len(d) else np.zeros(d.shape[1])
        out.append(v / max(np.linalg.norm(v), 1e-12))
    return np.stack(out)


def main() -> None:
    from matchlab.evaluation.retrieval import labelled_mix, retrieval_metrics
    from matchlab.pipeline import extract_features
    from matchlab.registry import load_extractor
    from matchlab.retrieval.select import VLAD_CONF
    from matchlab.retrieval.vlad import VLAD
    from matchlab.store import FeatureStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", default="sift")
    parser.add_argument("--resize", type=int, default=1024)
    parser.add_argument("--max-keypoints", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "vlad_choices")
    args = parser.parse_args()

    root, images = labelled_mix()
    names = [im.name for im in images]
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"features-{args.features}-{args.resize}-{args.max_keypoints}.h5"
    extractor = load_extractor(args.features, resize=args.resize, max_keypoints=args.max_keypoints)
    extract_features(root, names, path, extractor, progress=True)
    with FeatureStore(path, mode="r") as store:
        local = [store.read(n).descriptors.numpy().astype(np.float32) for n in names]
    labels, groups = [im.label for im in images], [im.dataset for im in images]

    print(f"{len(images)} images of the labelled mix; {args.features}, long side {args.resize}, "
          f"{args.max_keypoints} keypoints")
    print(f"{'descriptor':<52} {'dim':>6} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP':>6} {'s':>6}")
    rows = [("mean-pooled local descriptors", None)] + [(None, v) for v in VARIANTS]
    for label, conf in rows:
        start = time.perf_counter()
        if conf is None:
            x = mean_pooled(local)
        else:
            vlad = VLAD(**conf, max_training=VLAD_CONF["max_training"]).fit(local)
            x = np.stack([vlad.encode(d).numpy() for d in local])
            chosen = all(VLAD_CONF.get(k) == v for k, v in conf.items())
            label = ("VLAD " + " ".join(f"{k}={v}" for k, v in conf.items())
                     + ("  (default)" if chosen else ""))
        r = retrieval_metrics(x, labels, groups=groups)
        print(f"{label:<52} {x.shape[1]:>6} {r['R@1']:>6.3f} {r['R@5']:>6.3f} {r['R@10']:>6.3f} "
              f"{r['mAP']:>6.3f} {time.perf_counter() - start:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
