"""What running the stages on Ray costs and gains on one machine: local executor vs Ray with
1 and 2 workers.

    python benchmarks/distributed.py [--street 250] [--work /tmp/distributed] \
        [--json docs/results/distributed.json]

Scenes: sacre_coeur (10 photos; SuperPoint at 640 px with 1024 keypoints, then mutual NN on
the 45 exhaustive pairs: the setting of the Ray acceptance test) and the synthetic street of
benchmarks/scale.py (N cameras, its features and sequential:10 + retrieval:20 pairs; mutual
NN with ratio 0.8). Each stage runs into a fresh output file with the local executor, then
on a Ray started here with as many CPUs as the machine has, with 1 and with 2 workers
(workers start for each stage, building their model: that cost is in the times, and
given apart as "worker start"). "overhead / task": (Ray with 1 worker - its worker start -
local) / tasks, where a task is one image (extraction) or up to 64 pairs (matching). "equal": the Ray outputs hold exactly the local arrays. Rows carry the 1-minute
load average at their start and end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import load_average, scene_pairs, write_scene  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SACRE_COEUR = {"resize": 640, "max_keypoints": 1024}


def same_contents(a: Path, b: Path) -> bool:
    import h5py

    def read(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda k, v: out.__setitem__(k, v[()]) if hasattr(v, "shape") else None)
        return out

    x, y = read(a), read(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def timed(scene: str, stage: str, items: int, tasks: int, run, outputs: dict) -> list[dict]:
    """Rows of one stage: run(executor, output) with local, Ray 1 and Ray 2 workers."""
    from matchlab.distributed.ray_executor import RayExecutor

    rows = []
    for label, workers in (("local", None), ("ray 1", 1), ("ray 2", 2)):
        output = outputs[label]
        output.unlink(missing_ok=True)
        load = load_average()[0]
        start, starting = time.perf_counter(), 0.0
        if workers is None:
            run(None, output)
        else:
            with RayExecutor(workers=workers) as executor:
                run(executor, output)
            starting = executor.start_seconds
        seconds = time.perf_counter() - start
        rows.append({"scene": scene, "stage": stage, "executor": label, "items": items,
                     "tasks": tasks, "seconds": round(seconds, 2),
                     "worker_start_seconds": round(starting, 2), "load_start": load,
                     "load_end": load_average()[0],
                     "equal": workers is None or same_contents(output, outputs["local"])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def sacre_coeur(work: Path) -> list[dict]:
    from matchlab.cache import use_shared_mirrors
    from matchlab.pipeline import extract_features, match_pairs, model_record
    from matchlab.registry import load_extractor, load_matcher

    use_shared_mirrors(REPO.parent / "shared")
    root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", REPO.parent / "shared/datasets"))
    image_dir = root / "hloc_sacre_coeur" / "mapping"
    names = sorted(p.name for p in image_dir.glob("*.jpg"))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    extractor = load_extractor("superpoint", **SACRE_COEUR)
    matcher = load_matcher("nn", mutual_check=True)
    features = {k: work / f"features_{k.replace(' ', '')}.h5" for k in ("local", "ray 1", "ray 2")}
    matches = {k: work / f"matches_{k.replace(' ', '')}.h5" for k in features}
    rows = timed("sacre_coeur", "extract", len(names), len(names), lambda ex, out: (
        extract_features(image_dir, names, out, extractor, progress=False, executor=ex,
                         record=model_record("superpoint", extractor))), features)
    rows += timed("sacre_coeur", "match", len(pairs), -(-len(pairs) // 64), lambda ex, out: (
        match_pairs(pairs, features["local"], out, matcher, progress=False, executor=ex,
                    record=model_record("nn", matcher))), matches)
    return rows


def street(work: Path, n_images: int) -> list[dict]:
    from matchlab.pipeline import match_pairs
    from matchlab.registry import load_matcher

    rng = np.random.default_rng(1)
    names, centres, _ = write_scene(n_images, work, rng)
    pairs, _ = scene_pairs(names, centres, rng)
    matcher = load_matcher("nn", ratio_threshold=0.8)
    matches = {k: work / f"matches_{k.replace(' ', '')}.h5" for k in ("local", "ray 1", "ray 2")}
    return timed(f"street {n_images}", "match", len(pairs), -(-len(pairs) // 64),
                 lambda ex, out: match_pairs(pairs, work / "features.h5", out, matcher,
                                             progress=False, executor=ex), matches)


def main() -> None:
    import ray

    from matchlab.evaluation.benchmark_tables import distributed_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--street", type=int, default=250, help="street cameras (0: skip)")
    parser.add_argument("--work", type=Path, default=Path("outputs/distributed"))
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "sacre_coeur").mkdir(parents=True)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        rows = sacre_coeur(args.work / "sacre_coeur")
        if args.street:
            rows += street(args.work / "street", args.street)
    finally:
        ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(distributed_table(rows))


if __name__ == "__main__":
    main()
