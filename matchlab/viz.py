"""Drawing with OpenCV (no plotting library): match plots and a top view of a sparse model,
written as PNG. Names from an image folder appear only in sanitised file names."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
from torch import Tensor

from .images import read_image


def _to_bgr8(image: Tensor) -> np.ndarray:
    """float [C, H, W] in [0, 1] -> uint8 [H, W, 3] BGR."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., ::-1])


def draw_matches(image0: Tensor, image1: Tensor, points0: np.ndarray, points1: np.ndarray,
                 correct: np.ndarray | None = None, height: int = 480,
                 title: str | None = None) -> np.ndarray:
    """Side-by-side BGR uint8 canvas with one line per match.

    image0/1: [C, H, W] in [0, 1]; points0/1: [M, 2] pixels of those images; correct: [M] bool
    (green = correct, red = wrong), or None (all green).
    """
    panels, scales = [], []
    for image in (image0, image1):
        s = height / image.shape[1]
        panel = _to_bgr8(image)
        panels.append(cv2.resize(panel, (max(1, round(image.shape[2] * s)), height),
                                 interpolation=cv2.INTER_AREA))
        scales.append(s)
    gap = 10
    canvas = np.full((height, panels[0].shape[1] + gap + panels[1].shape[1], 3), 255, np.uint8)
    canvas[:, : panels[0].shape[1]] = panels[0]
    offset = panels[0].shape[1] + gap
    canvas[:, offset:] = panels[1]
    correct = np.ones(len(points0), bool) if correct is None else np.asarray(correct, bool)
    for (x0, y0), (x1, y1), ok in zip(points0, points1, correct):
        p0 = (int(round((x0 + 0.5) * scales[0] - 0.5)), int(round((y0 + 0.5) * scales[0] - 0.5)))
        p1 = (int(round((x1 + 0.5) * scales[1] - 0.5)) + offset, int(round((y1 + 0.5) * scales[1] - 0.5)))
        color = (0, 200, 0) if ok else (0, 0, 230)
        cv2.line(canvas, p0, p1, color, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 2, color, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2, color, -1, cv2.LINE_AA)
    if title:
        cv2.putText(canvas, title, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, title, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def save_png(path: str | os.PathLike, canvas: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")


def safe_filename(text: str, limit: int = 80) -> str:
    """A file name made of [A-Za-z0-9._-] only (never a path), from any image name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"
    return cleaned[:limit]


def plot_pairs(image_dir: str | Path, plots_dir: str | Path, pairs: Sequence[tuple[str, str]],
               keypoints: Mapping[str, np.ndarray], raw: Mapping[tuple[str, str], np.ndarray],
               inliers: Mapping[tuple[str, str], np.ndarray]) -> list[Path]:
    """One PNG per pair in `plots_dir`: raw matches, verified ones green, rejected ones red.

    keypoints: {name: [N, 2] pixels}; raw / inliers: {(name0, name1): [M, 2] index pairs}.
    Returns the paths written."""
    written = []
    for a, b in pairs:
        idx = raw[(a, b)]
        good = {tuple(p) for p in inliers.get((a, b), np.zeros((0, 2), np.int64)).tolist()}
        correct = np.array([tuple(p) in good for p in idx.tolist()], bool)
        title = f"{a} - {b}: {int(correct.sum())} verified / {len(idx)} matches"
        canvas = draw_matches(read_image(Path(image_dir) / a), read_image(Path(image_dir) / b),
                              keypoints[a][idx[:, 0]], keypoints[b][idx[:, 1]], correct,
                              title=title)
        name = f"matches_{len(written):02d}_{safe_filename(a)}__{safe_filename(b)}.png"
        path = Path(plots_dir) / name
        save_png(path, canvas)
        written.append(path)
    return written


def draw_top_view(rec, size: int = 640, extra_centres: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 [size, size, 3] image of a pycolmap Reconstruction seen from above: points
    grey, camera centres red, and `extra_centres` [M, 3] (e.g. localized queries, in the
    model's frame) blue.

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
    flat_e = (np.zeros((0, 2)) if extra_centres is None
              else np.asarray(extra_centres, np.float64).reshape(-1, 3) @ axes.T)
    box = np.concatenate([flat_c, flat_e] + ([np.percentile(flat_p, [1, 99], axis=0)]
                                             if len(flat_p) else []))
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
    for x, y in pixels(flat_e):
        cv2.circle(canvas, (int(x), int(y)), 5, (220, 90, 0), -1, cv2.LINE_AA)
    return canvas
