"""CUDA path check: a matcher on the GPU in float32 / float16 / bfloat16 against the CPU float32
result on real features, plus time per pair. Prints a table.

    python benchmarks/gpu_agreement.py FEATURES.pt --matcher superglue --conf weights=outdoor

FEATURES.pt: `torch.save({name: {"keypoints", "descriptors", "scores", "image_size"}})` of real
features (made where the extractor's weights are, e.g. by `--make` below on the CPU machine):

    python benchmarks/gpu_agreement.py out.pt --make --features superpoint --images a.png b.png
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from matchlab import Features, load_extractor, load_matcher
from matchlab.cli.common import parse_conf


def make(path: str, features: str, images: list[str], max_keypoints: int) -> None:
    ext = load_extractor(features, max_keypoints=max_keypoints)
    out = {}
    for image in images:
        f = ext(image)
        out[image] = {"keypoints": f.keypoints, "descriptors": f.descriptors, "scores": f.scores,
                      "image_size": torch.tensor(f.image_size)}
    torch.save(out, path)


def timed(fn, device: torch.device, repeats: int = 5) -> tuple[object, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    sync()
    return result, (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--make", action="store_true")
    parser.add_argument("--features", default="superpoint")
    parser.add_argument("--images", nargs="*", default=[])
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--matcher", default="superglue")
    parser.add_argument("--conf", nargs="*", default=[])
    parser.add_argument("--precisions", nargs="+", default=["float32", "float16", "bfloat16"])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.make:
        return make(args.file, args.features, args.images, args.max_keypoints)
    data = torch.load(args.file, weights_only=True)
    feats = {n: Features(d["keypoints"], d["descriptors"], d["scores"], tuple(d["image_size"].tolist()))
             for n, d in data.items()}
    pairs = list(itertools.combinations(sorted(feats), 2))[:args.pairs]
    conf = parse_conf(args.conf, "--conf")
    cpu = load_matcher(args.matcher, **conf)
    gpu = torch.device(args.device)
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else "cpu"
    print(f"{args.matcher} {conf} on {name}; {len(pairs)} real pairs, "
          f"{max(len(f) for f in feats.values())} keypoints per image")
    print("precision  agree_with_cpu_fp32  matches(gpu/cpu)  gpu_ms_per_pair  cpu_ms_per_pair")
    reference = {}
    cpu_time = 0.0
    for a, b in pairs:
        reference[(a, b)], t = timed(lambda: cpu(feats[a], feats[b]), torch.device("cpu"), 1)
        cpu_time += t
    for precision in args.precisions:
        model = load_matcher(args.matcher, **conf, precision=precision).to(gpu)
        agree, n_gpu, n_cpu, gpu_time = [], 0, 0, 0.0
        for a, b in pairs:
            f0, f1 = feats[a].to(gpu), feats[b].to(gpu)
            result, t = timed(lambda: model(f0, f1), gpu)
            gpu_time += t
            ref = reference[(a, b)]
            valid = ref.matches0 > -1
            agree.append((result.matches0.cpu()[valid] == ref.matches0[valid]).float().mean().item())
            n_gpu += len(result)
            n_cpu += len(ref)
        print(f"{precision:<9}  {sum(agree) / len(agree):>19.4f}  {n_gpu:>7}/{n_cpu:<8}  "
              f"{1000 * gpu_time / len(pairs):>15.1f}  {1000 * cpu_time / len(pairs):>15.1f}")


if __name__ == "__main__":
    main()
