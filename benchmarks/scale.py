"""What `matchlab sfm` costs after extraction as the number of images grows: a synthetic street.

    python benchmarks/scale.py --sizes 250 1000 [--mapper global] [--work /tmp/scale]

A street of 3D points on two facades (with some relief, so the scene is not two planes), N
cameras walking down it with known poses and one shared pinhole camera. Each image sees its
visible points projected with 0.5 px noise (at most 1,000 keypoints); a point's descriptor is
one random unit vector plus noise per observation. Blank images of the right size stand in
for the pictures. Then the real stages run: pairs (sequential:10 plus retrieval:20 over
synthetic global descriptors, noisy enough that some retrieved pairs join unrelated places),
mutual-NN matching with ratio 0.8 (`match_pairs`), database import, COLMAP verification,
mapping, and the camera centres against ground truth after a similarity alignment.

Each N runs in its own process; the table gives seconds per stage, the peak RSS after each
stage (the process's high-water mark, so it only grows), registered images and the camera
error in units of the spacing between neighbouring cameras, and the growth exponent of each
stage between the two largest N (log(t2 / t1) / log(N2 / N1)).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPACING = 1.0        # metres between neighbouring cameras
STREET_WIDTH = 12.0  # metres between the facades
FACADE_HEIGHT = 15.0
POINTS_PER_METRE = 400  # per facade
MAX_KEYPOINTS = 1000
SIZE = (1024, 768)   # image width, height in pixels
FOCAL = 700.0
DESCRIPTOR_DIM = 128


def street(n_images: int, seed: int = 0):
    """(points [P, 3], centres [N, 3], rotations [N, 3, 3] world-to-camera). The cameras walk
    along +z at x = 0, eye height 1.6 m (y down), looking forward (yaw jitter of 10 degrees),
    so that each sees both facades obliquely."""
    rng = np.random.default_rng(seed)
    length = n_images * SPACING + 40.0
    n_points = int(POINTS_PER_METRE * length)
    points = []
    for side in (-1.0, 1.0):
        z = rng.uniform(-20.0, length - 20.0, n_points)
        y = -rng.uniform(0.0, FACADE_HEIGHT, n_points)
        relief = np.where(rng.random(n_points) < 0.3, rng.uniform(-1.0, 0.0, n_points), 0.0)
        x = side * (STREET_WIDTH / 2 + relief)
        points.append(np.stack([x, y, z], 1))
    points = np.concatenate(points)
    centres = np.stack([np.zeros(n_images), np.full(n_images, -1.6),
                        np.arange(n_images) * SPACING], 1)
    yaws = np.radians(rng.normal(0, 10.0, n_images))
    rotations = np.stack([np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0],
                                    [math.sin(a), 0, math.cos(a)]]) for a in yaws])
    return points, centres, rotations


def observations(points, centre, rotation, rng):
    """(indices of the points seen, keypoints [M, 2] in pixels with 0.5 px noise)."""
    cam = (points - centre) @ rotation.T
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = FOCAL * cam[:, :2] / depth[:, None] + np.array([SIZE[0] / 2, SIZE[1] / 2])
    seen = np.flatnonzero((depth > 0.5) & (depth < 40.0) & (uv[:, 0] >= 0) & (uv[:, 0] < SIZE[0])
                          & (uv[:, 1] >= 0) & (uv[:, 1] < SIZE[1]))
    if len(seen) > MAX_KEYPOINTS:
        seen = np.sort(rng.choice(seen, MAX_KEYPOINTS, replace=False))
    return seen, uv[seen] + rng.normal(0, 0.5, (len(seen), 2))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n_images: int, work: Path, mapper: str) -> dict:
    """Every stage after extraction for one N; returns the row of the table."""
    import cv2
    import torch

    from matchlab.pipeline import match_pairs, read_keypoints_and_matches
    from matchlab.registry import load_matcher
    from matchlab.retrieval.pairs import dedupe_pairs, sequential_pairs
    from matchlab.retrieval.select import retrieval_pairs
    from matchlab.sfm import create_database, reconstruct, verify
    from matchlab.sfm.reconstruction import align_and_compare
    from matchlab.store import FeatureStore
    from matchlab.types import Features

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    row: dict = {"images": n_images, "seconds": {}, "peak_rss_mb": {}}

    def stage(name: str, start: float) -> None:
        row["seconds"][name] = round(time.perf_counter() - start, 2)
        row["peak_rss_mb"][name] = round(peak_rss_mb())

    start = time.perf_counter()
    points, centres, rotations = street(n_images)
    point_descriptors = rng.normal(size=(len(points), DESCRIPTOR_DIM)).astype(np.float32)
    point_descriptors /= np.linalg.norm(point_descriptors, axis=1, keepdims=True)
    image_dir = work / "images"
    image_dir.mkdir(exist_ok=True)
    blank = cv2.imencode(".png", np.zeros((SIZE[1], SIZE[0]), np.uint8))[1].tobytes()
    names = [f"{i:05d}.png" for i in range(n_images)]
    with FeatureStore(work / "features.h5") as store:
        for name, centre, rotation in zip(names, centres, rotations):
            (image_dir / name).write_bytes(blank)
            seen, keypoints = observations(points, centre, rotation, rng)
            desc = point_descriptors[seen] + rng.normal(0, 0.08, (len(seen), DESCRIPTOR_DIM))
            desc /= np.linalg.norm(desc, axis=1, keepdims=True)
            store.write(name, Features(torch.from_numpy(keypoints).float(),
                                       torch.from_numpy(desc).float(),
                                       torch.ones(len(seen)), SIZE))
    stage("scene", start)

    start = time.perf_counter()
    # global descriptor: a smooth code of the position along the street, plus noise
    z = centres[:, 2:3] / 10.0
    code = np.concatenate([np.sin(z * f) for f in (1, 2, 4)] + [np.cos(z * f) for f in (1, 2, 4)], 1)
    globals_ = np.concatenate([code, rng.normal(0, 0.6, (n_images, 26))], 1).astype(np.float32)
    globals_ /= np.linalg.norm(globals_, axis=1, keepdims=True)
    pairs = dedupe_pairs(sequential_pairs(names, 10) + retrieval_pairs(names, globals_, 20))
    stage("pairs", start)
    row["pairs"] = len(pairs)

    start = time.perf_counter()
    matcher = load_matcher("nn", ratio_threshold=0.8)
    match_pairs(pairs, work / "features.h5", work / "matches.h5", matcher, progress=False)
    stage("match", start)

    start = time.perf_counter()
    keypoints, pair_matches = read_keypoints_and_matches(work / "features.h5",
                                                         work / "matches.h5", names, pairs)
    create_database(work / "database.db", image_dir, names, keypoints, pair_matches,
                    camera_model="PINHOLE", camera_mode="single",
                    camera_params=[FOCAL, FOCAL, SIZE[0] / 2, SIZE[1] / 2])
    del keypoints, pair_matches
    stage("database", start)

    start = time.perf_counter()
    verify(work / "database.db", pairs)
    stage("verify", start)

    start = time.perf_counter()
    rec = reconstruct(work / "database.db", image_dir, work / "sfm", mapper=mapper,
                      image_names=names, export=False)
    stage("map", start)

    gt = {n: c for n, c in zip(names, centres)}
    result = align_and_compare(rec, gt)
    row["registered"] = int(rec.num_reg_images())
    row["median_error_spacing"] = round(float(result["median_error"]) / SPACING, 4)
    row["max_error_spacing"] = round(float(result["max_error"]) / SPACING, 4)
    return row


def exponent(rows: list[dict], stage: str) -> str:
    (a, b) = sorted(rows, key=lambda r: r["images"])[-2:]
    ta, tb = a["seconds"].get(stage), b["seconds"].get(stage)
    if not ta or not tb:
        return "-"
    return f"{math.log(tb / ta) / math.log(b['images'] / a['images']):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--mapper", default="global", choices=["global", "incremental"])
    parser.add_argument("--work", type=Path, default=Path("outputs/scale"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: run one N
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.work / str(args.one), args.mapper)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--mapper", args.mapper,
                              "--work", str(args.work)], capture_output=True, text=True)
        if out.returncode:
            print(f"N={n} failed:\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    stages = ["scene", "pairs", "match", "database", "verify", "map"]
    print(f"load average {' '.join(load)}; mapper {args.mapper}; seconds (peak RSS MB)")
    print("| images | pairs | " + " | ".join(stages) + " | registered | median / max error "
          "(camera spacings) |")
    print("|---" * (len(stages) + 4) + "|")
    for r in rows:
        cells = [f"{r['seconds'][s]:.1f} ({r['peak_rss_mb'][s]})" for s in stages]
        print(f"| {r['images']} | {r['pairs']} | " + " | ".join(cells)
              + f" | {r['registered']} | {r['median_error_spacing']} / {r['max_error_spacing']} |")
    if len(rows) >= 2:
        print("| growth exponent | | " + " | ".join(exponent(rows, s) for s in stages) + " | | |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
