"""OUT_DIR/report.html of `matchlab localize`: per query its status and inlier matches, and
the localized cameras drawn in the model's top view.

plots/query_NAME.png  the query beside the model image with the most inliers, their
                      matches to keypoints with a 3D point: pose inliers green, others red (the query alone with its matched keypoints
                      when the model's image folder is unknown)
plots/top_view.png    the model from above: points grey, model cameras red, queries blue
Names from the query folder appear in the page only as escaped text and in sanitised file
names.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping

import numpy as np


def write_query_plot(out_dir: Path, name: str, query_path: Path, query_keypoints: np.ndarray,
                     model_path: Path | None, model_keypoints: np.ndarray, pairs: np.ndarray,
                     inliers: np.ndarray, title: str) -> Path:
    """plots/query_NAME.png (see the module docstring); returns its path."""
    from ..images import read_image
    from ..viz import draw_matches, safe_filename, save_png

    query = read_image(query_path)
    points0 = query_keypoints[pairs[:, 0]]
    if model_path is not None and model_path.is_file():
        canvas = draw_matches(query, read_image(model_path), points0,
                              model_keypoints[pairs[:, 1]], inliers, title=title)
    else:  # the query twice: its matched keypoints, on both sides
        canvas = draw_matches(query, query, points0, points0, inliers, title=title)
    path = out_dir / "plots" / f"query_{safe_filename(name)}.png"
    save_png(path, canvas)
    return path


def write_report(out_dir: Path, rec, records: Mapping[str, dict], settings: dict,
                 model_dir: Path) -> Path:
    """OUT_DIR/report.html and plots/top_view.png from the records of localization.json."""
    from ..viz import draw_top_view, safe_filename, save_png
    from .poses import pose_from_qt

    esc = html.escape
    centres = []
    for record in records.values():
        if record["status"] == "localized":
            pose = pose_from_qt(record["cam_from_world"]["q"], record["cam_from_world"]["t"])
            centres.append(-np.asarray(pose.rotation.matrix()).T @ np.asarray(pose.translation))
    top = out_dir / "plots" / "top_view.png"
    save_png(top, draw_top_view(rec, extra_centres=np.array(centres).reshape(-1, 3)))
    rows = []
    for name, r in records.items():
        plot = out_dir / "plots" / f"query_{safe_filename(name)}.png"
        link = (f"<a href='plots/{esc(plot.name)}'>matches</a>" if plot.is_file()
                and r["status"] == "localized" else "")
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(r['status'])}</td>"
                    f"<td>{r.get('inliers', '')}</td><td>{r.get('num_2d3d', '')}</td>"
                    f"<td>{r.get('seconds', 0):.1f}</td><td>{esc(r.get('reason', ''))}</td>"
                    f"<td>{link}</td></tr>")
    page = "\n".join([
        "<!doctype html><meta charset='utf-8'><title>matchlab localize report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "td,th{padding:2px 10px;text-align:left}img{max-width:100%}</style>",
        "<h1>matchlab localize report</h1>",
        f"<p>model {esc(str(model_dir))}; features {esc(settings['features']['name'])}, "
        f"matcher {esc(settings['matcher']['name'])}, retrieval {esc(settings['retrieval'])}, "
        f"k={settings['k']}</p>",
        "<h2>Queries</h2><table><tr><th>query</th><th>status</th><th>inliers</th>"
        "<th>2D-3D</th><th>seconds</th><th>reason</th><th>plot</th></tr>", *rows, "</table>",
        "<h2>Model seen from above</h2><p>points grey, model cameras red, localized queries "
        "blue</p><img src='plots/top_view.png'>"])
    path = out_dir / "report.html"
    path.write_text(page)
    return path
