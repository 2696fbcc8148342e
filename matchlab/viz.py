"""Match plots written as PNG with OpenCV (no plotting library needed)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from torch import Tensor


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
