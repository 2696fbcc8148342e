"""Where SuperPoint's time goes: one extractor call on an image file, split into its parts.

    OMP_NUM_THREADS=2 python benchmarks/superpoint_profile.py [IMAGE] [--long-side 1024]

Parts (the best of --repeats calls after one warm-up: other jobs only add time; wall and
CPU time of all threads):
  prepare   Extractor.prepare: decode (+ JPEG check), grayscale, resize
  network   SuperPoint.dense: the convolutions, softmax, depth-to-space, descriptor norm
  nms       simple_nms on the score map
  select    the rest of detect: threshold, borders, top-k, descriptor sampling
  output    the rest of the call: keypoints to original pixels, Features
  call      the whole call on the file (about the sum of the parts)
and the network's convolution FLOPs with the GFLOP/s they ran at. The load average is
printed: with other jobs on the machine, wall times are not trustworthy (CPU times less so).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from matchlab.datasets import dataset_path  # noqa: E402
from matchlab.extractors import superpoint  # noqa: E402
from matchlab.registry import load_extractor  # noqa: E402


def conv_flops(model, height: int, width: int) -> float:
    """FLOPs (2 per multiply-add) of the network's convolutions on a height x width image."""
    total = 0.0
    for name, conv in model.named_children():
        if isinstance(conv, torch.nn.Conv2d):
            stride = {"1": 1, "2": 2, "3": 4, "4": 8}.get(name[4], superpoint.CELL)  # conv1a.. / convPa..
            pixels = (height // stride) * (width // stride)
            total += 2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] ** 2 * pixels
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, nargs="?",
                        help="default: sacre_coeur1.jpg of the lightglue_assets dataset")
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    if args.image is None:
        args.image = dataset_path("lightglue_assets") / "sacre_coeur1.jpg"
    model = load_extractor("superpoint", resize=args.long_side, max_keypoints=args.max_keypoints,
                           precision=args.precision)
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def timed(part: str, fn, *inputs):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*inputs)
        wall.setdefault(part, []).append(time.perf_counter() - w)
        cpu.setdefault(part, []).append(time.process_time() - c)
        return out

    radius = int(model.conf["nms_radius"])
    with torch.inference_mode():
        for _ in range(args.repeats + 1):
            prepared = timed("prepare", model.prepare, args.image)
            batch = prepared.image[None]
            dense = timed("network", model.dense, batch)
            kept = timed("nms", superpoint.simple_nms, dense[0], radius)
            # the other parts alone: the steps before them replaced by their results
            with mock.patch.object(model, "dense", lambda images: dense), \
                    mock.patch.object(superpoint, "simple_nms", lambda scores, r: kept):
                outs = timed("select", model.detect, batch)
            with mock.patch.object(model, "detect", lambda images: outs):
                timed("output", model, prepared)
            timed("call", model, args.image)
    for times in (wall, cpu):
        for part in times:
            times[part] = 1e3 * min(times[part][1:])
    height, width = batch.shape[-2:]
    flops = conv_flops(model, height, width)
    print(f"SuperPoint {args.precision}, {args.image.name} at {width} x {height}, "
          f"{args.max_keypoints} keypoints, torch threads {torch.get_num_threads()}, best of "
          f"{args.repeats}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'part':<9} {'wall ms':>8} {'cpu ms':>8} {'share':>6}")
    for part in ("prepare", "network", "nms", "select", "output", "call"):
        print(f"{part:<9} {wall[part]:8.1f} {cpu[part]:8.1f} {wall[part] / wall['call']:6.1%}")
    print(f"network: {flops / 1e9:.1f} GFLOP of convolutions, {flops / wall['network'] / 1e6:.0f} "
          f"GFLOP/s (wall)")


if __name__ == "__main__":
    main()
