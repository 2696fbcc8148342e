"""`make demo` / `matchlab demo`: match one real image pair and show how good the matches are.

oxford_graf img1 -> img3 (a 40-degree viewpoint change) has a ground-truth homography, so the
demo reports not just how many matches it found but how many are correct (within 3 px).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .geometry.homography import reprojection_errors
from .images import read_image
from .registry import load_extractor, load_matcher
from .viz import draw_matches, save_png


def run_demo(output_dir: str | Path = "outputs/demo", features: str = "superpoint",
             matcher: str = "nn", pair: tuple[str, str] = ("img1.png", "img3.png"),
             threshold_px: float = 3.0) -> dict:
    from .datasets import dataset_path
    from .datasets.readers import read_homography

    root = dataset_path("oxford_graf")
    path0, path1 = root / pair[0], root / pair[1]
    H = read_homography(root / f"H1to{Path(pair[1]).stem[-1]}p")
    extractor = load_extractor(features, resize=640, max_keypoints=1024)
    match = load_matcher(matcher)

    start = time.perf_counter()
    feats0, feats1 = extractor(path0), extractor(path1)
    t_extract = time.perf_counter() - start
    start = time.perf_counter()
    matches = match(feats0, feats1)
    t_match = time.perf_counter() - start

    idx = matches.pairs().numpy()
    points0 = feats0.keypoints.numpy()[idx[:, 0]]
    points1 = feats1.keypoints.numpy()[idx[:, 1]]
    errors = reprojection_errors(H, points0, points1)
    correct = errors < threshold_px
    summary = {
        "pair": f"oxford_graf/{pair[0]} -> {pair[1]}",
        "features": features, "matcher": matcher,
        "keypoints": (len(feats0), len(feats1)),
        "matches": len(idx),
        f"correct (<{threshold_px:g} px)": int(correct.sum()),
        "precision": float(correct.mean()) if len(idx) else 0.0,
        "median error px": float(np.median(errors)) if len(idx) else float("nan"),
        "extract s (2 images)": round(t_extract, 2), "match s": round(t_match, 3),
    }
    output_dir = Path(output_dir)
    plot = output_dir / "matches.png"
    title = f"{features}+{matcher}: {correct.sum()}/{len(idx)} correct"
    save_png(plot, draw_matches(read_image(path0), read_image(path1), points0, points1, correct,
                                title=title))
    summary["plot"] = str(plot)
    width = max(len(k) for k in summary)
    print("matchlab demo: two-view matching with ground truth")
    for key, value in summary.items():
        value = f"{value:.3f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {value}")
    return summary
