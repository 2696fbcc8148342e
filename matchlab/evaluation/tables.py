"""Tables of `matchlab eval` results, and the generated tables of the documentation.

`format_table(results)` prints what one `matchlab eval` run measured (text or Markdown).
The measured-results pages (docs/results.md, docs/affineglue.md) hold blocks

    <!-- table: NAME -->
    ...
    <!-- end table -->

whose contents are made by `DOC_TABLES[NAME]` from eval JSON files only, so that they
cannot drift from what the code measures:

    python -m matchlab.evaluation.tables docs/results --update docs/results.md docs/affineglue.md

RESULTS (here docs/results) holds one `RUN.json` per run of `matchlab eval` (the JSON it
wrote, per-pair rows dropped), or one folder `RUN/` per run as `matchlab eval --output
RESULTS/RUN` leaves it; `--save DIR` writes the first form from the second. The run names
and their commands are listed in docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .benchmark_tables import (batch_size_table, distributed_table, scale_table, speed_stages_table,
                               speed_table)
from .render import render

# ------------------------------------------------------------------ one run's results


def _rows(result: dict) -> tuple[list[str], list[list[str]]]:
    method, dataset = result.get("method", "?"), result["dataset"]
    if result["benchmark"] == "pose":
        head = ["method", "dataset", "estimator", "AUC@1", "AUC@2", "AUC@5", "AUC@10", "AUC@20",
                "P", "MS", "matches", "match s", "est. s"]
        rows = [[method, dataset, name, *(f"{r[f'auc@{t}deg']:.2f}" for t in (1, 2, 5, 10, 20)),
                 f"{result['precision']:.1f}", f"{result['matching_score']:.1f}",
                 f"{result['matches']:.0f}", f"{result['time_match_s']:.3f}",
                 f"{r['time_estimate_s']:.3f}"] for name, r in result["estimators"].items()]
        return head, rows
    if result["benchmark"] == "homography":
        head = ["method", "dataset", "estimator", "P@3px", "AUC@1px", "AUC@3px", "AUC@5px",
                "matches", "match s"]
        return head, [[method, dataset, result["estimator"],
                       f"{100 * result['precision@3px']:.1f}",
                       *(f"{100 * result[f'auc@{t}px']:.2f}" for t in (1, 3, 5)),
                       f"{result['matches']:.0f}", f"{result['time_match_s']:.3f}"]]
    if result["benchmark"] == "localization":
        return _localization_rows(result)
    head = ["method", "dataset", "registered", "median err m", "median %extent", "max %extent",
            "points", "time s"]
    return head, [[method, dataset, f"{result['registered']}/{result['num_images']}",
                   f"{result['median_error_m']:.4f}", f"{100 * result['median_error_rel']:.3f}",
                   f"{100 * result['max_error_rel']:.3f}", str(result["points3D"]),
                   f"{result['time_s']:.0f}"]]


def _localization_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    head = ["method", "dataset", "query cameras", "localized", "median pos cm", "median %extent",
            "max pos cm", "median rot deg", "max rot deg",
            *(f"R@{k.replace(',', '/')}" for k in result["recall"]), "model rot deg", "s/query"]
    cm = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    deg = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rel = result["median_position_error_rel"]
    return head, [[result.get("method", "?"), result["dataset"],
                   "GT intrinsics" if result["calibrated"] else "prior, refined",
                   f"{result['localized']}/{result['queries']}",
                   cm(result["median_position_error_m"]), "-" if rel is None else f"{100 * rel:.3f}",
                   cm(result["max_position_error_m"]), deg(result["median_rotation_error_deg"]),
                   deg(result["max_rotation_error_deg"]),
                   *(f"{v:.2f}" for v in result["recall"].values()),
                   deg(result.get("model_rotation_median_deg")), f"{result['seconds_per_query']:.1f}"]]


def format_table(results: Sequence[dict], markdown: bool = False) -> str:
    """Tables of eval results; consecutive results of one benchmark share a table."""
    blocks: list[tuple[list[str], list[list[str]]]] = []
    for result in results:
        head, rows = _rows(result)
        if blocks and blocks[-1][0] == head:
            blocks[-1][1].extend(rows)
        else:
            blocks.append((head, rows))
    return "\n\n".join(render(head, rows, markdown) for head, rows in blocks) + "\n"


# ------------------------------------------------------------------ reading the runs

Runs = Mapping[str, list]  # run name -> the list of result dicts its eval JSON holds


def _summary(result):
    """A result without its per-pair rows (all the tables need)."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k != "pairs" or not isinstance(v, list)}
    return result


def load_runs(folder: str | Path) -> dict[str, list]:
    """{run name: results} from `folder`/RUN.json files and `folder`/RUN/eval_*.json folders."""
    runs: dict[str, list] = {}
    for path in sorted(Path(folder).iterdir()):
        files = sorted(path.glob("eval_*.json")) if path.is_dir() else (
            [path] if path.suffix == ".json" else [])
        if files:
            runs[path.stem if path.is_file() else path.name] = [
                _summary(r) for f in files for r in json.loads(f.read_text())]
    return runs


def save_runs(runs: Runs, folder: str | Path) -> None:
    """Write each run's summaries to `folder`/RUN.json."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, results in runs.items():
        (Path(folder) / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")


# ------------------------------------------------------------------ the documentation's tables

# The runs behind the main tables, in row order (docs/results.md lists their commands).
MAIN_RUNS = ("all_sift_nn", "homography_sift_affineglue", "pose_sift_affineglue",
             "all_superpoint_nn", "all_disk_nn", "all_disk_lightglue",
             "all_superpoint_superglue", "homography_disk_affineglue", "pose_disk_affineglue")
GRAF, EVD, SCANNET, STRECHA = ("oxford_graf", "evd", "superglue_scannet_sample",
                               "strecha_fountain_P11")


def _results(runs: Runs, names: Sequence[str], benchmark: str) -> list[dict]:
    """The `benchmark` results of the runs `names` (absent runs skipped), stably sorted by
    dataset."""
    found = [r for n in names for r in runs.get(n, []) if r.get("benchmark") == benchmark]
    return sorted(found, key=lambda r: r["dataset"])


def _find(runs: Runs, run: str, benchmark: str, dataset: str, estimator: str) -> dict:
    """The numbers of one estimator on one dataset: a homography result, or a pose result's
    estimator entry merged into the result."""
    for r in runs[run]:
        if r.get("benchmark") != benchmark or r["dataset"] != dataset:
            continue
        if benchmark == "homography" and r["estimator"] == estimator:
            return r
        if benchmark == "pose" and estimator in r["estimators"]:
            return {**r, **r["estimators"][estimator]}
    raise KeyError(f"run {run!r} has no {benchmark} result for {dataset} / {estimator}")


def _present(runs: Runs, lines: Sequence[tuple]) -> list[tuple]:
    """The table lines (label, run names..., [other]) whose runs are all in `runs`: a run not
    measured (yet) leaves its rows out."""
    return [line for line in lines if all(x in runs for x in line[1:] if x.startswith(
        ("all_", "homography_", "pose_", "sfm_", "precision_")))]


def _pct(result: dict, *thresholds: int) -> str:
    """Homography AUCs in % at the given px thresholds, ' / '-joined."""
    return " / ".join(f"{100 * result[f'auc@{t}px']:.2f}" for t in thresholds)


def _deg(result: dict, *thresholds: int) -> str:
    """Pose AUCs in % at the given degree thresholds, ' / '-joined."""
    return " / ".join(f"{result[f'auc@{t}deg']:.2f}" for t in thresholds)


def _benchmark_table(benchmark: str, names: Sequence[str] = MAIN_RUNS) -> Callable[[Runs], str]:
    return lambda runs: format_table(_results(runs, names, benchmark), markdown=True).strip()


# `matchlab eval localization` runs, each one folder/JSON holding both camera settings.
LOCALIZATION_RUNS = ("localization_sift_nn", "localization_superpoint_nn",
                     "localization_disk_lightglue", "localization_superpoint_superglue")


def _localization(runs: Runs) -> str:
    """The localization runs side by side: first every method with estimated intrinsics, then
    every method with the ground-truth ones."""
    found = _results(runs, LOCALIZATION_RUNS, "localization")
    return format_table(sorted(found, key=lambda r: r["calibrated"]), markdown=True).strip()


def _triangulation(runs: Runs) -> str:
    """`matchlab sfm` against `matchlab triangulate` from the ground-truth poses on the same
    features, matches and pairs (the localization runs without --calibrated)."""
    head = ["method", "model", "3D points", "mean reprojection px", "mean track length"]
    rows = []
    for r in _results(runs, LOCALIZATION_RUNS, "localization"):
        if r["calibrated"] or "triangulation" not in r:
            continue
        for label, key in (("`matchlab sfm`", "sfm"),
                           ("`matchlab triangulate` (GT poses)", "triangulate")):
            m = r["triangulation"][key]
            rows.append([r.get("method", "?"), label, str(m["num_points3D"]),
                         f"{m['mean_reprojection_error']:.3f}", f"{m['mean_track_length']:.2f}"])
    return render(head, rows)


def _headline(runs: Runs) -> str:
    """One row per method: AUC@5 of homography (px) and pose (degrees) with pycolmap
    LO-RANSAC (AffineGlue: its own estimate), and the fountain reconstruction's error."""
    head = ["features + matcher", "graf AUC@5px", "EVD AUC@5px", "ScanNet AUC@5°",
            "Strecha AUC@5°", "fountain SfM median error"]
    lines = [(f"{f} + {m}", f"all_{f}_{m}", f"all_{f}_{m}", "lo-ransac")
             for f, m in (("sift", "nn"), ("superpoint", "nn"), ("disk", "nn"),
                          ("disk", "lightglue"), ("superpoint", "superglue"))]
    lines.append(("disk + affineglue", "homography_disk_affineglue", "pose_disk_affineglue",
                  "matcher"))
    rows = []
    for label, h, p, e in _present(runs, lines):
        sfm = [r for r in runs[p] if r.get("benchmark") == "reconstruction"]
        rows.append([label, _pct(_find(runs, h, "homography", GRAF, e), 5),
                     _pct(_find(runs, h, "homography", EVD, e), 5),
                     _deg(_find(runs, p, "pose", SCANNET, e), 5),
                     _deg(_find(runs, p, "pose", STRECHA, e), 5),
                     f"{100 * sfm[0]['median_error_rel']:.3f} % of the extent" if sfm else "-"])
    return render(head, rows)


def _estimators(runs: Runs) -> str:
    """AUC@5 of every pose estimator on the same matches, and the estimators' time."""
    names = ("ransac", "lo-ransac", "w8pt", "w8pt+ba", "ransac+ba")
    lines = (("SP + SG indoor (official)", "pose_superpoint_superglue_indoor", SCANNET),
             ("SP + SG outdoor", "all_superpoint_superglue", STRECHA),
             ("DISK + LightGlue", "all_disk_lightglue", SCANNET),
             ("DISK + LightGlue", "all_disk_lightglue", STRECHA))
    rows = []
    for label, run, dataset in _present(runs, lines):
        values = [_find(runs, run, "pose", dataset, n)["auc@5deg"] for n in names]
        best = max(values)
        rows.append([label, "ScanNet" if dataset == SCANNET else "Strecha",
                     *(f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in values)])
    timing_run = next((r for r in ("all_superpoint_superglue", "all_disk_lightglue") if r in runs),
                      None)
    if timing_run:
        label = "SP+SG" if timing_run == "all_superpoint_superglue" else "DISK+LG"
        rows.append([f"time per pair (Strecha, {label})", "", *(
            f"{1000 * _find(runs, timing_run, 'pose', STRECHA, n)['time_estimate_s']:.0f} ms"
            for n in names)])
    return render(["matches", "dataset", *names], rows)


def _sfm_pairs(runs: Runs) -> str:
    head = ["features + matcher", "scene", "pairs", "#pairs", "registered", "median err",
            "max err", "time s"]
    rows = []
    for run in ("sfm_pairs_sift_nn", "sfm_pairs_disk_lightglue"):
        for scene in runs.get(run, []):
            method = f"{scene['features']} + {scene['matcher']}"
            for label in ("exhaustive", "retrieval"):
                row = scene[label]
                reference = scene["scene"] == "sacre_coeur" and label == "exhaustive"
                errors = ["(reference)", ""] if reference else [
                    f"{100 * row[k]:.3f} %" for k in ("median_error_rel", "max_error_rel")]
                rows.append([method, scene["scene"], row["pairs"], str(row["num_pairs"]),
                             f"{row['registered']} / {row['num_images']}", *errors,
                             f"{row['total_s']:.1f}"])
    return render(head, rows)


def _affineglue_vs_ransac(runs: Runs) -> str:
    head = ["", "graf AUC@1/3/5 px", "EVD AUC@5 px", "ScanNet AUC@5", "Strecha AUC@2 / @5"]
    lines = [(f"LightGlue + {label}", "all_disk_lightglue", "all_disk_lightglue", estimator)
             for label, estimator in (("OpenCV RANSAC", "ransac"),
                                      ("pycolmap LO-RANSAC", "lo-ransac"))]
    lines.append(("AffineGlue (LightGlue pools)", "homography_disk_affineglue",
                  "pose_disk_affineglue", "matcher"))
    rows = [[label, _pct(_find(runs, h, "homography", GRAF, e), 1, 3, 5),
             _pct(_find(runs, h, "homography", EVD, e), 5),
             _deg(_find(runs, p, "pose", SCANNET, e), 5),
             _deg(_find(runs, p, "pose", STRECHA, e), 2, 5)]
            for label, h, p, e in _present(runs, lines)]
    if "pose_disk_affineglue_no_lo_start" in runs:
        run = "pose_disk_affineglue_no_lo_start"
        rows.append(["AffineGlue without the LO-RANSAC start", "(same)", "(same)",
                     _deg(_find(runs, run, "pose", SCANNET, "matcher"), 5),
                     _deg(_find(runs, run, "pose", STRECHA, "matcher"), 2, 5)])
    return render(head, rows)


def _affineglue_variants(lines: Sequence[tuple[str, str, str]]) -> Callable[[Runs], str]:
    """AffineGlue settings side by side: (label, homography run, pose run) per row."""
    def table(runs: Runs) -> str:
        head = ["", "graf AUC@1/3/5 px", "EVD AUC@5 px", "ScanNet AUC@5", "Strecha AUC@2 / @5",
                "Strecha match s per pair"]
        rows = []
        for label, h, p in _present(runs, lines):
            strecha = _find(runs, p, "pose", STRECHA, "matcher")
            rows.append([label, _pct(_find(runs, h, "homography", GRAF, "matcher"), 1, 3, 5),
                         _pct(_find(runs, h, "homography", EVD, "matcher"), 5),
                         _deg(_find(runs, p, "pose", SCANNET, "matcher"), 5),
                         _deg(strecha, 2, 5), f"{strecha['time_match_s']:.2f}"])
        return render(head, rows)
    return table


def _affineglue_sift(runs: Runs) -> str:
    head = ["SIFT 2048 + mutual NN", "graf AUC@1/3/5 px", "ScanNet AUC@5 / @10",
            "Strecha AUC@1 / @2 / @5", "Strecha s per pair"]
    lines = (("OpenCV RANSAC", "all_sift_nn", "all_sift_nn", "ransac"),
             ("pycolmap LO-RANSAC", "all_sift_nn", "all_sift_nn", "lo-ransac"),
             ("AffineGlue (NN pools)", "homography_sift_affineglue", "pose_sift_affineglue",
              "matcher"))
    rows = []
    for label, h, p, e in _present(runs, lines):
        strecha = _find(runs, p, "pose", STRECHA, e)
        rows.append([label, _pct(_find(runs, h, "homography", GRAF, e), 1, 3, 5),
                     _deg(_find(runs, p, "pose", SCANNET, e), 5, 10), _deg(strecha, 1, 2, 5),
                     f"{strecha['time_match_s'] + strecha['time_estimate_s']:.2f}"])
    return render(head, rows)


# (what runs in bfloat16, float32 run, bfloat16 run, model class): one model at a time
PRECISION_RUNS = (
    ("SuperPoint, + mutual NN", "all_superpoint_nn", "precision_superpoint_nn_bf16", "SuperPoint"),
    ("DISK, + mutual NN", "all_disk_nn", "precision_disk_nn_bf16", "DISK"),
    ("ALIKED-n16, + mutual NN", "precision_aliked_nn_f32", "precision_aliked_nn_bf16", "ALIKED"),
    ("SuperGlue outdoor, SuperPoint float32", "all_superpoint_superglue",
     "precision_superpoint_superglue_bf16", "SuperGlue"),
    ("LightGlue, DISK float32", "all_disk_lightglue", "precision_disk_lightglue_bf16",
     "LightGlue"),
)


def _precision(runs: Runs) -> str:
    """float32 -> bfloat16 per model (pycolmap LO-RANSAC), and what "auto" picks."""
    from ..precision import AUTO_BFLOAT16

    head = ["model in bfloat16", "graf AUC@5px", "EVD AUC@5px", "ScanNet AUC@5°",
            "Strecha AUC@5°", "Strecha P %", "Strecha matches", "auto on bf16 hardware"]
    rows = []
    for label, f32, bf16, model in _present(runs, PRECISION_RUNS):
        cells = []
        for benchmark, dataset, show in (
                ("homography", GRAF, lambda r: _pct(r, 5)), ("homography", EVD, lambda r: _pct(r, 5)),
                ("pose", SCANNET, lambda r: _deg(r, 5)), ("pose", STRECHA, lambda r: _deg(r, 5)),
                ("pose", STRECHA, lambda r: f"{r['precision']:.1f}"),
                ("pose", STRECHA, lambda r: f"{r['matches']:.0f}")):
            a, b = (show(_find(runs, run, benchmark, dataset, "lo-ransac")) for run in (f32, bf16))
            cells.append(f"{a} → {b}")
        rows.append([label, *cells, "bfloat16" if model in AUTO_BFLOAT16 else "float32"])
    return render(head, rows)


DOC_TABLES: dict[str, Callable[[Runs], str]] = {
    "headline": _headline,
    "homography": _benchmark_table("homography"),
    "pose": _benchmark_table("pose"),
    "reconstruction": _benchmark_table("reconstruction"),
    "superglue-indoor": _benchmark_table("pose", ("pose_superpoint_superglue_indoor",)),
    "estimators": _estimators,
    "sfm-pairs": _sfm_pairs,
    "localization": _localization,
    "triangulation": _triangulation,
    "scale": lambda runs: scale_table(runs.get("scale_street", [])),
    "distributed": lambda runs: distributed_table(runs.get("distributed", [])),
    "speed": lambda runs: speed_table(runs.get("speed", [])),
    "speed-stages": lambda runs: speed_stages_table(runs.get("speed", [])),
    "batch-size": lambda runs: batch_size_table(runs.get("batch_size", [])),
    "precision": _precision,
    "affineglue-vs-ransac": _affineglue_vs_ransac,
    "affineglue-sift": _affineglue_sift,
    "affineglue-scoring": _affineglue_variants((
        ("MSAC (default)", "homography_disk_affineglue", "pose_disk_affineglue"),
        ("MAGSAC++", "homography_disk_affineglue_magsac", "pose_disk_affineglue_magsac"),
        ("MAGSAC++, threshold x2 (6 px / 2 px)", "homography_disk_affineglue_magsac_x2",
         "pose_disk_affineglue_magsac_x2"))),
    "affineglue-neighbours": _affineglue_variants((
        ("AffNet frames (default)", "homography_disk_affineglue", "pose_disk_affineglue"),
        ("neighbours", "homography_disk_affineglue_neighbours",
         "pose_disk_affineglue_neighbours"))),
}

_BLOCK = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- end table -->)", re.S)


def update_blocks(text: str, runs: Runs) -> str:
    """`text` with every table block's contents replaced by the table it names."""
    def fill(match: re.Match) -> str:
        name = match.group(2)
        if name not in DOC_TABLES:
            raise KeyError(f"unknown table {name!r}; known: {', '.join(DOC_TABLES)}")
        return f"{match.group(1)}{DOC_TABLES[name](runs)}\n{match.group(4)}"
    return _BLOCK.sub(fill, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matchlab.evaluation.tables",
        description="Make the documentation's tables from eval JSON files.")
    parser.add_argument("results", type=Path, help="folder of RUN.json files or RUN/ folders")
    parser.add_argument("--update", nargs="+", type=Path, default=[], metavar="FILE.md",
                        help="rewrite the table blocks of these Markdown files")
    parser.add_argument("--check", action="store_true",
                        help="with --update: change nothing, exit 1 if a file would change")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="write each run's results, per-pair rows dropped, to DIR/RUN.json")
    args = parser.parse_args(argv)
    runs = load_runs(args.results)
    if args.save:
        save_runs(runs, args.save)
    stale = []
    for path in args.update:
        old = path.read_text()
        new = update_blocks(old, runs)
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if not args.update and not args.save:
        for name, table in DOC_TABLES.items():
            try:
                print(f"<!-- table: {name} -->\n{table(runs)}\n<!-- end table -->\n")
            except KeyError as e:  # a run it needs is missing
                print(f"<!-- table: {name}: {e} -->\n", file=sys.stderr)
    if args.check and stale:
        print("out of date: " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
