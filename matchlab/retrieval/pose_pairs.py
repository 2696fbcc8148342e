"""Image pairs from known camera poses: `nearest:K` and `covisible:K` pair specs.

Both take, per image, its camera centre C [3] and viewing direction d [3] (the optical
axis, unit, world frame; for a world-to-camera pose x_cam = R X + t: C = -R^T t, d = the
third row of R), in any world frame and unit.

nearest:K    each image with the K other images whose camera centres are closest
             (Euclidean distance; ties in the order of the names).
covisible:K  the same, among the other images whose viewing direction is within
             COVISIBLE_MAX_ANGLE_DEG (60 degrees) of the image's own: cameras looking
             away from each other (two sides of an object, a street filmed both ways)
             are not paired even when close.

Pairs are unioned over the images and de-duplicated, so an image may be in more than K
pairs; fewer than K are made where fewer images qualify.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .pairs import Pair, dedupe_pairs

__all__ = ["COVISIBLE_MAX_ANGLE_DEG", "POSE_SPEC_KINDS", "pose_pairs", "centre_and_direction"]

COVISIBLE_MAX_ANGLE_DEG = 60.0
POSE_SPEC_KINDS = ("nearest", "covisible")


def centre_and_direction(cam_from_world) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre [3], viewing direction [3]) of a pycolmap.Rigid3d world-to-camera."""
    rotation = np.asarray(cam_from_world.rotation.matrix(), dtype=np.float64)
    centre = -rotation.T @ np.asarray(cam_from_world.translation, dtype=np.float64)
    return centre, rotation[2]


def pose_pairs(kind: str, k: int, names: Sequence[str],
               cameras: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[Pair]:
    """The pairs of `nearest:k` or `covisible:k` (module doc) among `names`.

    cameras: {name: (centre [3], viewing direction [3])} for every name.
    Memory and time are O(n^2) in the number of images (a distance matrix)."""
    if kind not in POSE_SPEC_KINDS:
        raise ValueError(f"pose pairs are {POSE_SPEC_KINDS}, not {kind!r}")
    names = list(names)
    if len(names) < 2:
        return []
    centres = np.stack([np.asarray(cameras[n][0], np.float64) for n in names])
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    if kind == "covisible":
        axes = np.stack([np.asarray(cameras[n][1], np.float64) for n in names])
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        apart = axes @ axes.T < np.cos(np.radians(COVISIBLE_MAX_ANGLE_DEG))
        distance[apart] = np.inf
    pairs = []
    for i, row in enumerate(distance):
        order = np.argsort(row, kind="stable")[:k]  # stable: ties in name order
        pairs += [(names[i], names[j]) for j in order if np.isfinite(row[j])]
    return dedupe_pairs(pairs)
