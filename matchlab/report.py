"""Visual output of `matchlab sfm`: match plots of chosen pairs and a one-page HTML report.

Everything is drawn with OpenCV (no plotting library). Names from the image folder appear
only as escaped text and in sanitised file names inside OUTPUT_DIR/plots.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from .images import read_image
from .viz import draw_matches, save_png


def safe_filename(text: str, limit: int = 80) -> str:
    """A file name made of [A-Za-z0-9._-] only (never a path), from any image name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"
    return cleaned[:limit]


def verified_inliers(db_path: str | Path, pairs: Sequence[tuple[str, str]]
                     ) -> dict[tuple[str, str], np.ndarray]:
    """{(name0, name1): [K, 2] keypoint index pairs} of the geometrically verified matches."""
    import pycolmap

    out = {}
    with pycolmap.Database.open(str(db_path)) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        for a, b in pairs:
            if a not in ids or b not in ids or not db.exists_two_view_geometry(ids[a], ids[b]):
                out[(a, b)] = np.zeros((0, 2), np.int64)
                continue
            inl = np.asarray(db.read_two_view_geometry(ids[a], ids[b]).inlier_matches, np.int64)
            out[(a, b)] = inl.reshape(-1, 2)
    return out


def plot_pairs(image_dir: str | Path, plots_dir: str | Path, pairs: Sequence[tuple[str, str]],
               keypoints: Mapping[str, np.ndarray], raw: Mapping[tuple[str, str], np.ndarray],
               inliers: Mapping[tuple[str, str], np.ndarray]) -> list[Path]:
    """One PNG per pair: raw matches, verified ones green, rejected ones red. Returns paths."""
    written = []
    for a, b in pairs:
        idx = raw[(a, b)]
        good = {tuple(p) for p in inliers.get((a, b), np.zeros((0, 2), np.int64)).tolist()}
        correct = np.array([tuple(p) in good for p in idx.tolist()], bool)
        title = f"{a} - {b}: {int(correct.sum())} verified / {len(idx)} matches"
        canvas = draw_matches(read_image(Path(image_dir) / a), read_image(Path(image_dir) / b),
                              keypoints[a][idx[:, 0]], keypoints[b][idx[:, 1]], correct,
                              title=title)
        path = Path(plots_dir) / f"matches_{len(written):02d}_{safe_filename(a)}__{safe_filename(b)}.png"
        save_png(path, canvas)
        written.append(path)
    return written


def draw_top_view(rec, size: int = 640) -> np.ndarray:
    """BGR image of the sparse model seen from above: points grey, camera centres red.

    "Up" is the mean of the cameras' upward axes (photos are mostly taken upright), so the
    view looks down on the scene; the frame holds the cameras and the central 98 % of the
    points at equal scale on both axes."""
    images = [im for im in rec.images.values() if im.has_pose]
    canvas = np.full((size, size, 3), 255, np.uint8)
    if not images:
        return canvas
    rotations = np.stack([np.asarray(im.cam_from_world().rotation.matrix()) for im in images])
    centres = np.stack([im.projection_center() for im in images])
    points = (np.array([p.xyz for p in rec.points3D.values()]) if rec.num_points3D()
              else np.zeros((0, 3)))
    up = -rotations[:, 1, :].mean(0)  # camera y points down in the image
    right = rotations[:, 0, :].mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    right -= up * (right @ up)
    right /= max(np.linalg.norm(right), 1e-12)
    forward = np.cross(up, right)
    axes = np.stack([right, -forward])  # image x = right, image y = towards the cameras
    flat_c = centres @ axes.T
    flat_p = points @ axes.T
    box = flat_c if not len(flat_p) else np.concatenate(
        [flat_c, np.percentile(flat_p, [1, 99], axis=0)])
    low, high = box.min(0), box.max(0)
    scale = (size - 40) / max(float(np.max(high - low)), 1e-9)
    offset = (size - (high - low) * scale) / 2

    def pixels(xy):
        return np.round((xy - low) * scale + offset).astype(int)

    for x, y in pixels(flat_p):
        if 0 <= x < size and 0 <= y < size:
            canvas[y, x] = (110, 110, 110)
    for x, y in pixels(flat_c):
        cv2.circle(canvas, (int(x), int(y)), 5, (0, 0, 220), -1, cv2.LINE_AA)
    return canvas


def write_report(output_dir: str | Path, summary: dict, plots: Sequence[Path],
                 top_view: Path | None) -> Path:
    """OUTPUT_DIR/report.html: reconstruction statistics, stages, skipped images, plots."""
    output_dir = Path(output_dir)
    esc = html.escape
    rows = [("registered images", f"{summary['num_reg_images']} / {summary['num_input_images']}"),
            ("3D points", summary["num_points3D"]),
            ("mean track length", f"{summary['mean_track_length']:.2f}"),
            ("mean reprojection error", f"{summary['mean_reprojection_error']:.3f} px")]
    config = summary.get("config", {})
    parts = [
        "<!doctype html><meta charset='utf-8'><title>matchlab sfm report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "td,th{padding:2px 10px;text-align:left}img{max-width:100%}</style>",
        "<h1>matchlab sfm report</h1>",
        "<p>" + esc(", ".join(f"{k}={v}" for k, v in config.items() if not isinstance(v, dict)))
        + "</p>",
        "<h2>Reconstruction</h2><table>",
        *[f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in rows],
        "</table><h2>Stages</h2><table><tr><th>stage</th><th>done</th><th>already there</th>"
        "<th>failed</th><th>seconds</th></tr>",
        *[f"<tr><td>{esc(s['stage'])}</td><td>{s['done']}</td><td>{s['already']}</td>"
          f"<td>{len(s['failed'])}</td><td>{s['seconds']:.1f}</td></tr>"
          for s in summary.get("stages", [])],
        "</table><h2>Images left out</h2><table>",
        *[f"<tr><td>{esc(n)}</td><td>skipped: {esc(why)}</td></tr>"
          for n, why in summary.get("skipped", {}).items()],
        *[f"<tr><td>{esc(n)}</td><td>not registered"
          f"{': ' + esc(summary.get('dropped', {})[n]) if n in summary.get('dropped', {}) else ''}"
          f"</td></tr>" for n in summary.get("unregistered", [])],
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


def save_top_view(rec, path: str | Path) -> Path:
    save_png(path, draw_top_view(rec))
    return Path(path)
