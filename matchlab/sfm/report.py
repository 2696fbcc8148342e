"""What `matchlab sfm` tells about a model: the summary lines of its log and the one-page
OUTPUT_DIR/report.html (statistics, stages, images left out, top view, match plots).

`summary_rows` is the one formatter of a model summary; the log and the HTML page both
show its rows. Names from the image folder appear in the page only as escaped text.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence


LISTED = 20  # names shown per row; summary.json lists all


def listing(items: Sequence[str], limit: int = LISTED) -> str:
    """The first `limit` items joined by commas, then how many more ('-' when none), so a
    row stays readable at 10,000 images."""
    text = ", ".join(items[:limit]) or "-"
    if len(items) > limit:
        text += f" ... and {len(items) - limit} more (summary.json lists all)"
    return text


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, text) rows of a `run_sfm` summary: registered images, 3D points, mean track
    length, mean reprojection error (px), images not registered and images skipped (why),
    each list cut to its first LISTED names."""
    dropped = summary.get("dropped", {})
    return [
        ("registered images", f"{summary['num_reg_images']} / {summary['num_input_images']}"),
        ("3D points", str(summary["num_points3D"])),
        ("mean track length", f"{summary['mean_track_length']:.2f}"),
        ("mean reprojection error", f"{summary['mean_reprojection_error']:.3f} px"),
        ("not registered", listing([n + (f" (dropped: {dropped[n]})" if n in dropped else "")
                                    for n in summary["unregistered"]])),
        ("skipped", listing([f"{k} ({v})" for k, v in summary.get("skipped", {}).items()])),
    ]


def format_summary(summary: dict) -> str:
    """The summary rows as indented plain-text lines (the end of `matchlab sfm`'s log)."""
    rows = summary_rows(summary)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def write_report(output_dir: str | Path, summary: dict, plots: Sequence[Path],
                 top_view: Path | None) -> Path:
    """OUTPUT_DIR/report.html: the summary rows, the stages, the top view and the match plots
    (`plots` and `top_view`: PNG files inside output_dir). Returns the page's path."""
    output_dir = Path(output_dir)
    esc = html.escape
    config = summary.get("config", {})
    parts = [
        "<!doctype html><meta charset='utf-8'><title>matchlab sfm report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "td,th{padding:2px 10px;text-align:left}img{max-width:100%}</style>",
        "<h1>matchlab sfm report</h1>",
        "<p>" + esc(", ".join(f"{k}={v}" for k, v in config.items() if not isinstance(v, dict)))
        + "</p>",
        "<h2>Reconstruction</h2><table>",
        *[f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(summary)],
        "</table><h2>Stages</h2><table><tr><th>stage</th><th>done</th><th>already there</th>"
        "<th>failed</th><th>seconds</th></tr>",
        *[f"<tr><td>{esc(s['stage'])}</td><td>{s['done']}</td><td>{s['already']}</td>"
          f"<td>{len(s['failed'])}</td><td>{s['seconds']:.1f}</td></tr>"
          for s in summary.get("stages", [])],
        "</table>",
    ]
    if top_view is not None:
        parts.append(f"<h2>Model seen from above</h2><p>points grey, cameras red</p>"
                     f"<img src='{esc(top_view.relative_to(output_dir).as_posix())}'>")
    if plots:
        parts.append("<h2>Matches</h2><p>green: geometrically verified, red: rejected</p>")
        parts += [f"<p><img src='{esc(p.relative_to(output_dir).as_posix())}'></p>" for p in plots]
    path = output_dir / "report.html"
    path.write_text("\n".join(parts))
    return path


def most_verified(db_path: str | Path, pairs: Sequence[tuple[str, str]], count: int
                  ) -> list[tuple[str, str]]:
    """The `count` pairs with the most verified matches in the COLMAP database (ties in the
    order given), found from the stored inlier counts alone (no match arrays are read)."""
    import numpy as np
    import pycolmap

    from .database import read_image_ids

    if count <= 0 or not pairs:
        return []
    ids = read_image_ids(db_path)
    with pycolmap.Database.open(str(db_path)) as db:
        stored, inliers = (np.asarray(v, np.int64)
                           for v in db.read_two_view_geometry_num_inliers())
    if len(stored) == 0:
        return [tuple(p) for p in pairs[:count]]
    order = np.argsort(stored)
    stored, inliers = stored[order], inliers[order]
    wanted = np.array([pycolmap.image_pair_to_pair_id(ids[a], ids[b])
                       if a in ids and b in ids else -1 for a, b in pairs], np.int64)
    at = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
    counts = np.where(stored[at] == wanted, inliers[at], 0)
    return [tuple(pairs[i]) for i in np.argsort(-counts, kind="stable")[:count]]


def write_visual_report(output_dir: Path, image_dir: Path, rec, summary: dict,
                        pairs: Sequence[tuple[str, str]], keypoints, pair_matches,
                        plots: int) -> Path:
    """Match plots of the `plots` pairs with the most verified matches (read from
    OUTPUT_DIR/database.db), the top view of `rec`, then report.html. keypoints:
    {name: [N, 2] px}; pair_matches: {(name0, name1): [M, 2] raw index pairs}; both are
    read only for the plotted pairs (mappings reading the stores on access suit)."""
    from ..viz import draw_top_view, plot_pairs, save_png
    from .verification import verified_inliers

    best = most_verified(output_dir / "database.db", pairs, plots)
    inliers = verified_inliers(output_dir / "database.db", best)
    written = plot_pairs(image_dir, output_dir / "plots", best, keypoints, pair_matches, inliers)
    top = output_dir / "plots" / "top_view.png"
    save_png(top, draw_top_view(rec))
    return write_report(output_dir, summary, written, top)
