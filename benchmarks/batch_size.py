"""How many pairs a matcher should take at once, by keypoint count: the rule behind
`--batch-size auto` (matchlab.matchers.base.auto_batch_size).

    python benchmarks/batch_size.py                      # LightGlue + SuperGlue, 512-4096 kp
    python benchmarks/batch_size.py --matchers lightglue --keypoints 1024 2048 --json out.json

For each matcher, keypoint count n (the n best of each image) and batch size b, the first
--pairs pairs of the 10 hloc sacre_coeur mapping images are matched b pairs per call, in one
process, interleaved over --repeats rounds, each round from an empty per-image cache:
LightGlue (DISK, adaptive: the demo's matcher) packs the b pairs' tokens into one pass;
SuperGlue (SuperPoint, outdoor) pads them into one [b, ...] batch. Printed: ms a pair
(median), relative to b = 1, and the largest activation buffer of one call (MB, analytic).
The allocator is set as the `matchlab` command sets it (`reuse_freed_memory`).
Needs an otherwise idle machine: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from matchlab.memory import reuse_freed_memory  # noqa: E402
from matchlab.registry import load_extractor, load_matcher  # noqa: E402

MODELS = {  # matcher -> (extractor, matcher options, bytes of activations per token)
    # LightGlue: the fused projection [T, 1792] of a self block, float32
    "lightglue": ("disk", {"for_features": "disk"}, 1792 * 4),
    # SuperGlue: the fused projection [B, L, 1280] of a layer, float32
    "superglue": ("superpoint", {"weights": "outdoor"}, 1280 * 4),
}


def scene_features(extractor: str, n: int, folder: Path) -> list:
    ext = load_extractor(extractor, resize=1024, max_keypoints=n,
                         **({"detection_threshold": 0.0} if extractor == "superpoint" else {}))
    return [ext(p) for p in sorted(folder.glob("*.jpg"))]


def main(argv: list[str] | None = None) -> None:
    root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", REPO.parent / "shared" / "datasets"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matchers", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--keypoints", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="add the rows to this file (rows of the same "
                        "matcher, keypoints and batch size are replaced; docs/results/"
                        "batch_size.json: the generated table of docs/results.md)")
    args = parser.parse_args(argv)
    reuse_freed_memory()
    folder = root / "hloc_sacre_coeur" / "mapping"
    load_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.pairs} pairs, "
          f"median of {args.repeats}; load average at the start {load_start:.1f}")
    print(f"{'matcher':<10} {'kp':>5} {'batch':>5} | {'ms/pair':>8} {'vs b=1':>7} | {'MB/call':>8}")
    rows = []
    for name in args.matchers:
        extractor, conf, token_bytes = MODELS[name]
        all_feats = scene_features(extractor, max(args.keypoints), folder)
        matcher = load_matcher(name, **conf)
        for n in args.keypoints:
            feats = [f.subset(torch.argsort(f.scores, descending=True)[:n]) for f in all_feats]
            pairs = [(feats[i], feats[j]) for i, j in
                     itertools.combinations(range(len(feats)), 2)][:args.pairs]
            tokens = statistics.mean(len(a) + len(b) for a, b in pairs)
            times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
            with torch.inference_mode():
                matcher(*pairs[0])  # warm-up
                for _ in range(args.repeats):
                    for b in args.batch_sizes:
                        if name == "lightglue":
                            matcher.conf["batch_size"] = b
                            matcher.engine.images.clear()
                        start = time.perf_counter()
                        for c in range(0, len(pairs), b):
                            matcher.match_batch(pairs[c:c + b])
                        times[b].append((time.perf_counter() - start) / len(pairs))
            single = statistics.median(times[args.batch_sizes[0]])
            for b in args.batch_sizes:
                ms = 1e3 * statistics.median(times[b])
                mb = b * tokens * token_bytes / 2**20
                print(f"{name:<10} {n:5d} {b:5d} | {ms:8.0f} {ms / 1e3 / single:6.2f}x | {mb:8.0f}",
                      flush=True)
                rows.append({"matcher": name, "keypoints": n, "mean_tokens": tokens,
                             "batch_size": b, "ms_per_pair": ms, "activation_mb": mb})
    load_end = os.getloadavg()[0]
    print(f"load average at the end {load_end:.1f}")
    if args.json:  # one JSON row per table cell, each with its run's conditions
        conditions = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "pairs": args.pairs,
                      "repeats": args.repeats, "load_start": load_start, "load_end": load_end}
        key = lambda r: (r["matcher"], r["keypoints"], r["batch_size"])  # noqa: E731
        new = {key(r): {**r, **conditions} for r in rows}
        old = json.loads(args.json.read_text()) if args.json.exists() else []
        kept = [r for r in old if key(r) not in new]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(sorted(kept + list(new.values()), key=key), indent=1) + "\n")


if __name__ == "__main__":
    main()
