"""Matcher speed benchmarks: SuperGlue (ours vs a plain implementation of the same maths) and
LightGlue (ours vs kornia's LightGlue, same weights, same inputs; see `lightglue_main`).

    python benchmarks/matchers.py --matcher lightglue   # the LightGlue tables (below)

    python benchmarks/matchers.py                       # 512 1024 2048 4096 kpts/side
    python benchmarks/matchers.py --sizes 512 1024 --iterations 20
    OMP_NUM_THREADS=2 python benchmarks/matchers.py     # the CI machine's 2 cores

For each keypoint count N (per side) and Sinkhorn iteration count, both implementations
match the same pair of features (by default real SuperPoint features of a ScanNet sample
pair at full resolution, nms 3, threshold 0, the N best of each image; `--features
synthetic` for random ones) with the `superglue_indoor.pth` weights. Printed per row:
  time per pair: the best of one run in a fresh process per implementation (after a warm-up
  on a small pair; that run also gives the peak memory) and of interleaved ours / plain
  rounds run in this process while the cell has used less than --budget seconds;
  peak memory: resident set above its level before the call (CPU), peak allocated (CUDA);
  GFLOP/s: the analytic FLOP count of the official network (keypoint encoder, 18 attention
  layers, final projection, score matrix; Sinkhorn not counted) / time, the same count
  for both implementations (ours folds the merge projection away: 2-7 % fewer FLOPs);
  the speed-up, the number of matches and whether the matches are identical.
Timings need an otherwise idle machine: the load average is printed before and after.

`PlainSuperGlue` (tests/matchers/reference_superglue.py) is the baseline: a direct,
straightforward transcription of the official maths that loads the same checkpoints
strictly; tests/matchers/test_superglue.py uses it as the reference for matchlab's
implementation.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


# ============================================================== the plain baseline
# PlainSuperGlue lives with the tests, which use it as the reference for our SuperGlue.
sys.path[:0] = [str(REPO), str(REPO / "tests" / "matchers")]
from reference_superglue import PlainSuperGlue  # noqa: E402


# ============================================================== FLOP count
def superglue_flops(n0: int, n1: int) -> int:
    """Multiply-adds x 2 of the official SuperGlue network for one pair (Sinkhorn excluded)."""
    kenc = 2 * (3 * 32 + 32 * 64 + 64 * 128 + 128 * 256 + 256 * 256) * (n0 + n1)
    layers = 0
    for _ in range(9):  # self layers: sources are the image itself
        for nq, ns in ((n0, n0), (n1, n1)):
            layers += _layer_flops(nq, ns)
    for _ in range(9):  # cross layers
        for nq, ns in ((n0, n1), (n1, n0)):
            layers += _layer_flops(nq, ns)
    final = 2 * 256 * 256 * (n0 + n1) + 2 * n0 * n1 * 256
    return kenc + layers + final


def _layer_flops(nq: int, ns: int) -> int:
    proj = 2 * 256 * 256 * (nq + 2 * ns)          # q on queries, k and v on sources
    attn = 2 * 2 * nq * ns * 256                   # q k^T and prob v over 4 heads x 64
    merge = 2 * 256 * 256 * nq
    mlp = 2 * (512 * 512 + 512 * 256) * nq
    return proj + attn + merge + mlp


# ============================================================== measurement helpers
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Return freed heap to the OS and reset the peak-RSS counter (Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_features(kind: str, n: int, seed: int = 0):
    """Two Features with exactly n keypoints each (real SuperPoint ones or synthetic)."""
    from matchlab.types import Features

    if kind == "superpoint":
        from matchlab.registry import load_extractor
        root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", REPO.parent / "shared" / "datasets"))
        folder = root / "superglue_scannet_sample" / "images"
        names = ["scene0711_00_frame-001680.jpg", "scene0711_00_frame-001995.jpg"]
        ext = load_extractor("superpoint", resize=None, max_keypoints=n, nms_radius=3,
                             detection_threshold=0.0)
        feats = [ext(folder / name) for name in names]
        if min(len(f) for f in feats) < n:
            raise RuntimeError(f"only {[len(f) for f in feats]} SuperPoint keypoints; use fewer")
        return feats
    g = torch.Generator().manual_seed(seed)
    w, h = 1296, 968
    k0 = torch.rand(n, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    d0 = torch.nn.functional.normalize(torch.randn(n, 256, generator=g), dim=1)
    # image 1: a shifted, noisy copy of a random 70% of image 0's points, plus clutter
    keep = torch.randperm(n, generator=g)[: int(0.7 * n)]
    k1 = torch.rand(n, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    d1 = torch.nn.functional.normalize(torch.randn(n, 256, generator=g), dim=1)
    k1[: len(keep)] = (k0[keep] + torch.tensor([40.0, -25.0])).clamp(min=0) + torch.randn(len(keep), 2, generator=g)
    d1[: len(keep)] = torch.nn.functional.normalize(d0[keep] + 0.03 * torch.randn(len(keep), 256, generator=g), dim=1)
    s0, s1 = torch.rand(n, generator=g), torch.rand(n, generator=g)
    return [Features(k0, d0, s0, (w, h)), Features(k1, d1, s1, (w, h))]


def load_impl(impl: str, device: str):
    """The matcher to benchmark, as a callable (f0, f1) -> matches0 [N0], plus a setter
    for the Sinkhorn iteration count."""
    from matchlab.matchers.superglue import SuperGlue

    if impl == "ours":
        model = SuperGlue(weights="indoor").eval().to(device)

        def set_iters(n: int) -> None:
            model.conf["sinkhorn_iterations"] = n
        return (lambda a, b: model(a, b).matches0), set_iters
    model = PlainSuperGlue(weights="indoor").to(device)

    def set_iters(n: int) -> None:
        model.sinkhorn_iterations = n
    return (lambda a, b: model(a, b)["matches0"]), set_iters


def _timed(run, feats, device: str) -> tuple[float, torch.Tensor]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = run(*feats)
    sync()
    return time.perf_counter() - t0, out


def _child(args: argparse.Namespace) -> None:
    """One implementation at one size: for each iteration count, one run measured for peak
    memory (and time). Prints a JSON line."""
    feats = torch.load(args.feature_file, weights_only=False)
    run, set_iters = load_impl(args.impl, args.device)
    dev = torch.device(args.device)
    small = [f.subset(torch.arange(min(64, len(f)))) for f in feats]
    rows = []
    for iters in args.iterations:
        set_iters(iters)
        run(*small)  # warm-up: kernels, fused weights
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        else:
            _reset_peak()
            base = _rss_bytes()
        elapsed, m0 = _timed(run, feats, args.device)
        peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _hwm_bytes()) - base
        rows.append({"iters": iters, "time": elapsed, "peak": max(peak, 0), "matches0": m0.tolist()})
    print(json.dumps(rows))


def main(argv: list[str] | None = None) -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--matcher", choices=["superglue", "lightglue"], default="superglue")
    pre.add_argument("--device", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.matcher == "lightglue":
        if known.device in (None, "auto"):
            known.device = "cuda" if torch.cuda.is_available() else "cpu"
        return lightglue_main(rest, device=known.device)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096],
                        help="keypoints per side")
    parser.add_argument("--iterations", type=int, nargs="+", default=[100, 20],
                        help="Sinkhorn iteration counts")
    parser.add_argument("--features", choices=["superpoint", "synthetic"], default="superpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=4.0,
                        help="extra interleaved timing rounds (ours, plain, ours, ...) are run "
                             "while a cell has used less than this many seconds (max 5 rounds)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--feature-file", help=argparse.SUPPRESS)
    parser.add_argument("--matcher", choices=["superglue", "lightglue"], default="superglue",
                        help="which benchmark; lightglue takes its own options (--matcher lightglue "
                             "--help) and --device auto (cuda when available)")
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"features {args.features}, load average {os.getloadavg()[0]:.2f}")
    print("time: best of the runs (one in a fresh process that also measures peak memory, then "
          "interleaved ours/plain rounds); peak: resident memory above the level before the call")
    header = (f"{'kpts':>5} {'sink':>4} | {'ours ms':>9} {'peak MB':>8} {'GFLOP/s':>7} | "
              f"{'plain ms':>9} {'peak MB':>8} {'GFLOP/s':>7} | {'speed-up':>8} {'matches':>7} {'same':>5}")
    print(header)
    print("-" * len(header), flush=True)
    impls = {name: load_impl(name, args.device) for name in ("ours", "plain")}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            feats = make_features(args.features, n)
            path = Path(tmp) / f"feats_{n}.pt"
            torch.save(feats, path)
            res: dict[str, dict[int, dict]] = {}
            for impl in impls:
                cmd = [sys.executable, __file__, "--child", "--impl", impl, "--feature-file", str(path),
                       "--device", args.device, "--iterations", *map(str, args.iterations)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    raise RuntimeError(f"{impl} at {n} failed:\n{proc.stderr}")
                res[impl] = {r["iters"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
            gflop = superglue_flops(len(feats[0]), len(feats[1])) / 1e9
            for iters in args.iterations:
                times = {impl: [res[impl][iters]["time"]] for impl in impls}
                for impl, (run, set_iters) in impls.items():
                    set_iters(iters)
                spent = sum(t[0] for t in times.values())
                rounds = 1
                while spent < args.budget and rounds < 5:
                    for impl, (run, _) in impls.items():
                        elapsed, m0 = _timed(run, feats, args.device)
                        times[impl].append(elapsed)
                        spent += elapsed
                        if m0.tolist() != res[impl][iters]["matches0"]:
                            raise RuntimeError(f"{impl}: results differ between runs")
                    rounds += 1
                best = {impl: min(t) for impl, t in times.items()}
                a, b = res["ours"][iters], res["plain"][iters]
                cells = ["%9.1f %8.0f %7.1f" % (1e3 * best[k], res[k][iters]["peak"] / 2**20, gflop / best[k])
                         for k in ("ours", "plain")]
                same = a["matches0"] == b["matches0"]
                n_match = sum(m > -1 for m in a["matches0"])
                print(f"{n:5d} {iters:4d} | {cells[0]} | {cells[1]} | {best['plain'] / best['ours']:7.2f}x "
                      f"{n_match:7d} {'yes' if same else 'NO':>5}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (timings are only meaningful on an "
          f"otherwise idle machine)")
    print("GFLOP per pair (network, analytic, official layer structure, Sinkhorn excluded): "
          + ", ".join(f"{n}: {superglue_flops(n, n) / 1e9:.1f}" for n in args.sizes))


# ============================================================== LightGlue
def lightglue_features(n: int, folder: Path | None = None):
    """DISK features (long side 1024, as LightGlue's extractors; nms 5, threshold 0) of the
    10 hloc sacre_coeur mapping images, each cut to its n best keypoints."""
    from matchlab.registry import load_extractor

    root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", REPO.parent / "shared" / "datasets"))
    folder = folder or root / "hloc_sacre_coeur" / "mapping"
    ext = load_extractor("disk", resize=1024, max_keypoints=n)
    feats = [ext(p) for p in sorted(folder.glob("*.jpg"))]
    if min(len(f) for f in feats) < n:
        raise RuntimeError(f"only {[len(f) for f in feats]} DISK keypoints; use fewer")
    return feats


def subset_best(f, n: int):
    return f.subset(torch.argsort(f.scores, descending=True)[:n])


def lightglue_main(argv: list[str], device: str = "cpu") -> None:
    """LightGlue: ours vs kornia's ``kornia.feature.LightGlue`` (same disk_lightglue.pth
    weights and DISK features of hloc's sacre_coeur sample), adaptive (depth 0.95 / width
    0.99) and not (-1 / -1):
      single pair: images 0 and 1, best of --repeats interleaved runs (ours, kornia, ...);
        ours starts each run with an empty per-image cache;
      batch: all 45 pairs of the 10 images: ours ``match_batch`` (one call, empty cache)
        vs kornia one pair at a time (and ours one pair at a time), one run each.
    Columns: ms, matches, agreement = fraction of keypoints whose matches0 equals kornia's."""
    import itertools

    import kornia.feature as KF

    from matchlab.matchers.lightglue import LightGlue, official_state_dict
    from matchlab.weights import load_checkpoint

    parser = argparse.ArgumentParser(prog="matchers.py --matcher lightglue")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--adaptive", choices=["on", "off"], nargs="+", default=["off", "on"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[2048],
                        help="keypoint counts of the 45-pair rows")
    parser.add_argument("--batch-adaptive", choices=["on", "off"], nargs="*", default=["on"])
    parser.add_argument("--pairs", type=int, default=45, help="pairs in the batch rows (<= 45)")
    parser.add_argument("--single-loop", action="store_true",
                        help="also time ours one pair at a time in the batch rows")
    args = parser.parse_args(argv)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    state = official_state_dict(load_checkpoint("disk_lightglue.pth"))
    print(f"LightGlue (disk_lightglue.pth), torch {torch.__version__}, device {device}, threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    all_feats = lightglue_features(max(args.sizes + args.batch_sizes))

    def models(adaptive: str):
        conf = {} if adaptive == "on" else {"depth_confidence": -1, "width_confidence": -1}
        ours = LightGlue(features="disk", weights=None, **conf)
        ours.load_state_dict(state, strict=True)
        ref = KF.LightGlue(features=None, input_dim=128, **conf)
        ref.load_state_dict(state, strict=False)
        return ours.eval().to(device), ref.eval().to(device)

    def run_kornia(ref, f0, f1):
        def side(f):
            f = f.to(device)
            return {"keypoints": f.keypoints[None], "descriptors": f.descriptors[None],
                    "image_size": torch.tensor([f.image_size], device=device)}
        with torch.inference_mode():
            return ref({"image0": side(f0), "image1": side(f1)})["matches0"][0].cpu()

    def run_ours(ours, f0, f1):
        ours._images.clear()
        return ours(f0, f1).matches0

    def timed(fn, *a):
        sync()
        t0 = time.perf_counter()
        out = fn(*a)
        sync()
        return time.perf_counter() - t0, out

    header = (f"{'rows':>6} {'kpts':>5} {'adaptive':>8} | {'ours ms':>9} {'kornia ms':>9} {'speed-up':>8} | "
              f"{'matches':>7} {'agree':>7}")
    print("single pair (images 0-1): best of interleaved runs")
    print(header)
    print("-" * len(header), flush=True)
    for n in args.sizes:
        f0, f1 = (subset_best(f, n) for f in all_feats[:2])
        for adaptive in args.adaptive:
            ours, ref = models(adaptive)
            small = [f.subset(torch.arange(64)) for f in (f0, f1)]
            run_ours(ours, *small), run_kornia(ref, *small)  # warm-up
            t_ours, t_ref = [], []
            for _ in range(args.repeats):
                t, m_ours = timed(run_ours, ours, f0, f1)
                t_ours.append(t)
                t, m_ref = timed(run_kornia, ref, f0, f1)
                t_ref.append(t)
            agree = (m_ours == m_ref).float().mean().item()
            print(f"{'1 pair':>6} {n:5d} {adaptive:>8} | {1e3 * min(t_ours):9.0f} {1e3 * min(t_ref):9.0f} "
                  f"{min(t_ref) / min(t_ours):7.2f}x | {int((m_ours > -1).sum()):7d} {agree:7.2%}", flush=True)
    pairs_idx = list(itertools.combinations(range(len(all_feats)), 2))[:args.pairs]
    if args.batch_sizes and args.batch_adaptive:
        print(f"\nbatch: {len(pairs_idx)} pairs of {len(all_feats)} images, one run each; "
              f"ours = one match_batch call (batch_size 8, per-image work shared); pairs/s in ()")
        print(header + f" | {'ours 1-by-1 ms':>14}")
        print("-" * (len(header) + 17), flush=True)
    for n in args.batch_sizes:
        feats = [subset_best(f, n) for f in all_feats]
        pairs = [(feats[i], feats[j]) for i, j in pairs_idx]
        for adaptive in args.batch_adaptive:
            ours, ref = models(adaptive)
            ours._images.clear()
            t_ours, out = timed(ours.match_batch, pairs)
            t_ref, ref_out = timed(lambda: [run_kornia(ref, a, b) for a, b in pairs])
            loop = ""
            if args.single_loop:
                t_loop, _ = timed(lambda: [run_ours(ours, a, b) for a, b in pairs])
                loop = f" | {1e3 * t_loop:14.0f}"
            m0 = torch.cat([m.matches0 for m in out])
            agree = (m0 == torch.cat(ref_out)).float().mean().item()
            k = len(pairs)
            print(f"{k:3d} pr. {n:5d} {adaptive:>8} | {1e3 * t_ours:9.0f} {1e3 * t_ref:9.0f} "
                  f"{t_ref / t_ours:7.2f}x | {int((m0 > -1).sum()):7d} {agree:7.2%}{loop}"
                  f"   ({k / t_ours:.2f} vs {k / t_ref:.2f} pairs/s)", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (timings are only meaningful on an "
          f"otherwise idle machine)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
