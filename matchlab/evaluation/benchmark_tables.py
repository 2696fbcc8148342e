"""Tables of the scripts in benchmarks/ (scale, distributed, speed, batch size) from their
JSON rows; the documentation's table blocks name them (`tables.DOC_TABLES`)."""
from __future__ import annotations

import math
from typing import Sequence

from .render import render


SCALE_STAGES = ("scene", "pairs", "match", "database", "verify", "map")


def _growth(small: dict, large: dict, a: float | None, b: float | None) -> str:
    """log(b / a) / log(N_large / N_small), or '-' when a value is missing."""
    if not a or not b:
        return "-"
    return f"{math.log(b / a) / math.log(large['images'] / small['images']):.2f}"


def scale_table(rows: Sequence[dict]) -> str:
    """benchmarks/scale.py's rows: seconds per stage, peak RSS, feature reads per image,
    registered images and camera error (in camera spacings), load averages (start / end),
    and each column's growth exponent between the two largest N (peak RSS: over the stages
    both ran). A run stopped before its last stage (`stopped`) says during which one."""
    rows = sorted(rows, key=lambda r: r["images"])
    head = ["images", "pairs (unrelated)", "reads / image", *(f"{s} s" for s in SCALE_STAGES),
            "peak RSS MB", "registered", "median / max error", "load"]
    peak = lambda r: max(r["peak_rss_mb"].values())  # noqa: E731
    out = []
    for r in rows:
        error = (f"{r['median_error_spacing']} / {r['max_error_spacing']}"
                 if "registered" in r else "-")
        stopped = next((s for s in SCALE_STAGES if s not in r["seconds"]), None)
        out.append([str(r["images"]), f"{r['pairs']} ({100 * r['unrelated_pairs']:.0f} %)",
                    f"{r['feature_reads'] / r['images']:.2f}" if "feature_reads" in r else "-",
                    *(f"{r['seconds'][s]:.1f}" if s in r["seconds"] else "-"
                      for s in SCALE_STAGES),
                    str(peak(r)),
                    f"stopped during {stopped}" if r.get("stopped") and stopped
                    else f"{r.get('registered', '-')}", error,
                    f"{r['load_start'][0]:.1f} / {r['load_end'][0]:.1f}"])
    if len(rows) >= 2:
        small, large = rows[-2:]
        both = [s for s in small["peak_rss_mb"] if s in large["peak_rss_mb"]]  # stages both ran
        out.append(["growth exponent", _growth(small, large, small["pairs"], large["pairs"]),
                    "", *(_growth(small, large, small["seconds"].get(s), large["seconds"].get(s))
                          for s in SCALE_STAGES),
                    _growth(small, large, max(small["peak_rss_mb"][s] for s in both),
                            max(large["peak_rss_mb"][s] for s in both)), "", "", ""])
    return render(head, out)


def distributed_table(rows: Sequence[dict]) -> str:
    """benchmarks/distributed.py's rows: seconds per stage by executor, the workers' start,
    the Ray overhead per task with one worker, whether Ray's outputs equal the local ones, the load (start / end)."""
    by = {(r["scene"], r["stage"], r["executor"]): r for r in rows}
    head = ["scene", "stage", "items (tasks)", "local s", "Ray 1 worker s", "Ray 2 workers s",
            "worker start s (1 / 2)", "overhead / task ms", "equal", "load"]
    out = []
    for scene, stage in dict.fromkeys((r["scene"], r["stage"]) for r in rows):
        local, one, two = (by.get((scene, stage, e)) for e in ("local", "ray 1", "ray 2"))
        runs = [r for r in (local, one, two) if r]
        overhead = "-"
        if local and one:
            extra = one["seconds"] - one["worker_start_seconds"] - local["seconds"]
            overhead = f"{1000 * extra / one['tasks']:.0f}"
        start = " / ".join(f"{r['worker_start_seconds']:.1f}" for r in (one, two) if r)
        out.append([scene, stage, f"{runs[0]['items']} ({runs[0]['tasks']})",
                    *(f"{r['seconds']:.1f}" if r else "-" for r in (local, one, two)), start,
                    overhead,
                    "yes" if all(r["equal"] for r in runs) else "NO",
                    f"{runs[0]['load_start']:.1f} / {runs[-1]['load_end']:.1f}"])
    return render(head, out)


def speed_table(rows: Sequence[dict]) -> str:
    """benchmarks/speed.py --json: per row the keypoints it had (model rows; rows written
    before they were recorded: "-"), the reference's ms and ours in float32 and bfloat16
    (ms, reference / ours, agreement with the reference; for the sfm rows the registered
    images, ours / the reference's), and the load."""
    head = ["row", "keypoints", "reference ms", "matchlab float32 ms (ratio, agree)",
            "matchlab bfloat16 ms (ratio, agree)", "load"]
    out = []

    def agree(value) -> str:  # a fraction, or the sfm rows' "ours/reference" registered
        return f"{100 * value:.1f} %" if isinstance(value, float) else f"{value} registered"

    for r in rows:
        cells = [f"{r[f'{p}_ms']:.0f} ({r['reference_ms'] / r[f'{p}_ms']:.2f}x, "
                 f"{agree(r[f'{p}_agree'])})" for p in ("float32", "bfloat16")]
        out.append([r["row"], r.get("keypoints", "-"), f"{r['reference_ms']:.0f}", *cells,
                    f"{r['load']:.1f}"])
    return render(head, out)


def speed_stages_table(rows: Sequence[dict]) -> str:
    """benchmarks/speed.py --json, its sfm rows: seconds per stage of each chain (database:
    the import and the verification), and 3D points."""
    head = ["row", "chain", "extract s", "match s", "database + verify s", "map s", "points"]
    out = []
    for r in rows:
        for chain, d in r.get("details", {}).items():
            s = d["seconds"]
            out.append([r["row"], "reference" if chain == "reference" else f"matchlab {chain}",
                        f"{s['extract']:.1f}", f"{s['match']:.1f}",
                        f"{s['database']:.1f}", f"{s['map']:.1f}",
                        str(d["points"])])
    return render(head, out)


def batch_size_table(rows: Sequence[dict]) -> str:
    """benchmarks/batch_size.py's rows: per matcher and keypoint count, ms a pair at each
    batch size (and relative to the smallest), the batch `--batch-size auto` picks
    (`Matcher.batch_size_for`, from the registry's classes) and the load (start / end)."""
    from ..registry import resolve

    sizes = sorted({r["batch_size"] for r in rows})
    head = ["matcher", "keypoints", *(f"batch {b} ms" for b in sizes), "auto picks", "load"]
    by = {(r["matcher"], r["keypoints"], r["batch_size"]): r for r in rows}
    out = []
    for matcher, n in dict.fromkeys((r["matcher"], r["keypoints"]) for r in rows):
        cells = [by.get((matcher, n, b)) for b in sizes]
        first = next(c for c in cells if c)
        auto = resolve("matcher", matcher).batch_size_for(n)
        out.append([matcher, str(n), *(f"{c['ms_per_pair']:.0f} "
                                       f"({c['ms_per_pair'] / first['ms_per_pair']:.2f}x)"
                                       if c else "-" for c in cells), str(auto),
                    f"{first['load_start']:.1f} / {first['load_end']:.1f}"])
    return render(head, out)
