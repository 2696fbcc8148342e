"""Top-K retrieval over synthetic global descriptors: chunked search vs the naive full matrix.

    python benchmarks/retrieval.py                          # 100,000 x 4096, top-20, all queries
    python benchmarks/retrieval.py --queries 1000           # time a subset of the queries

Each run happens in a fresh subprocess so that its peak resident memory (ru_maxrss) is its
own. Descriptors are random unit vectors stored as float16 ([N, 4096]: 0.82 GB for 100,000;
float32 would be 1.6 GB) generated in the subprocess. The chunked search
(matchlab.retrieval.search.topk_similar) holds one [2048, rows] block of similarities and one
float32 database block (64 MB) at a time; the naive approach builds the full [Nq, N] float32
similarity matrix and sorts it (hloc / the MixVPR demo), at growing N until it exceeds
--naive-limit-gb (predicted from N before running, so the machine is never pushed into swap).
With --queries Q < N only the first Q rows are queries (all N remain the database), and the
time for all N queries is extrapolated linearly (the work per query is constant).
Correctness: at the smallest naive size, the chunked top-K indices equal the naive ones.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def make_descriptors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random unit vectors [n, dim] float16, generated in blocks (no float32 copy of all)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = np.empty((n, dim), np.float16)
    for i in range(0, n, 8192):
        block = torch.randn(min(8192, n - i), dim, generator=gen)
        out[i:i + len(block)] = (block / block.norm(dim=1, keepdim=True)).half().numpy()
    return out


def child(args: argparse.Namespace) -> None:
    import torch

    from matchlab.retrieval.search import brute_force_topk, topk_similar

    x = make_descriptors(args.num, args.dim)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nq = min(args.queries or args.num, args.num)
    ids = np.arange(args.num)
    start = time.perf_counter()
    if args.method == "chunked":
        _, index = topk_similar(x[:nq], x, args.k, query_ids=ids[:nq], db_ids=ids)
    else:
        _, index = brute_force_topk(torch.from_numpy(x[:nq]).float(), torch.from_numpy(x),
                                    args.k, query_ids=ids[:nq], db_ids=ids)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.save_index:
        np.save(args.save_index, index)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "descriptors_mb": x.nbytes / 2**20,
                      "after_generation_mb": base_mb, "queries": nq}))


def run(method: str, num: int, dim: int, k: int, queries: int | None,
        save_index: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--num", str(num), "--dim", str(dim),
           "--k", str(k)]
    if queries:
        cmd += ["--queries", str(queries)]
    if save_index:
        cmd += ["--save-index", save_index]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--queries", type=int, default=None,
                   help="time only this many queries (the database is always --num)")
    p.add_argument("--naive-sizes", default="2500,5000,10000,20000,40000")
    p.add_argument("--naive-limit-gb", type=float, default=12.0,
                   help="skip naive sizes whose similarity matrix and sort would need more")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--save-index", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.method = args.child
        child(args)
        return

    import tempfile
    from pathlib import Path

    rows = []
    tmp = Path(tempfile.mkdtemp())
    sizes = [int(s) for s in args.naive_sizes.split(",") if s]
    checked = None
    for n in sizes:
        # the [n, n] float32 matrix, the sort's values + int64 indices, the float32 copy
        need_gb = n * n * (4 + 4 + 8) / 2**30 + n * args.dim * 6 / 2**30
        if need_gb > args.naive_limit_gb:
            rows.append(("naive", n, n, None, f"skipped: needs ~{need_gb:.0f} GB"))
            continue
        naive = run("naive", n, args.dim, args.k, None, str(tmp / f"naive{n}.npy"))
        chunk = run("chunked", n, args.dim, args.k, None, str(tmp / f"chunked{n}.npy"))
        rows.append(("naive", n, n, naive, ""))
        rows.append(("chunked", n, n, chunk, ""))
        if checked is None and "error" not in naive and "error" not in chunk:
            checked = (n, bool((np.load(tmp / f"naive{n}.npy")
                                == np.load(tmp / f"chunked{n}.npy")).all()))
    big = run("chunked", args.num, args.dim, args.k, args.queries)
    rows.append(("chunked", args.num, args.queries or args.num, big, ""))

    print(f"top-{args.k} over N random unit {args.dim}-d descriptors stored as float16; "
          f"every image is a query unless 'queries' says otherwise")
    print(f"{'method':<8} {'N':>7} {'queries':>7} {'time s':>8} {'all N queries s':>15} "
          f"{'peak RSS GB':>11} {'descr. GB':>9}  note")
    for method, n, nq, r, note in rows:
        if r is None or "error" in r:
            print(f"{method:<8} {n:>7} {nq:>7} {'-':>8} {'-':>15} {'-':>11} {'-':>9}  "
                  f"{note or r['error']}")
            continue
        total = r["seconds"] * n / r["queries"]
        print(f"{method:<8} {n:>7} {r['queries']:>7} {r['seconds']:>8.1f} {total:>15.1f} "
              f"{r['peak_mb'] / 1024:>11.2f} {r['descriptors_mb'] / 1024:>9.2f}  {note}")
    if checked:
        print(f"chunked top-{args.k} indices == naive at N={checked[0]}: {checked[1]}")
    ok = "error" not in big and big["peak_mb"] / 1024 < 4.0
    print(f"acceptance: {args.num} x {args.dim} top-{args.k} peak memory "
          f"{big.get('peak_mb', float('nan')) / 1024:.2f} GB < 4 GB: {ok}")


if __name__ == "__main__":
    main()
