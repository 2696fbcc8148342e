"""Sequences (`matchlab localize --sequential N`): frames of a video localized in order, each
also matched to its N previous localized frames.

A localized frame keeps the 3D point each of its pose inliers was tied to
(OUT_DIR/frame_tracks/, one .npy per frame, written crash-safely), so a match between a new
frame and it gives a 2D-3D correspondence (2D-2D-3D) even where the new frame matches no
model image directly: frames in texture-poor stretches are carried by their neighbours.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..types import Features
from .absolute_pose import FRAME, ModelTracks

__all__ = ["SequenceTracks", "FRAME"]


class SequenceTracks:
    """The model's images and the localized query frames, as one set of references.

    Names starting with FRAME are frames (features from the queries' store, 3D points from
    their saved pose inliers); the others are model images (`ModelTracks`)."""

    def __init__(self, model: ModelTracks, store, folder: Path) -> None:
        self.model, self.store, self.folder = model, store, Path(folder)
        self.names = model.names
        self._ids: dict[str, np.ndarray] = {}

    def _path(self, name: str) -> Path:
        return self.folder / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".npy")

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def save(self, name: str, num_keypoints: int, inliers: np.ndarray) -> None:
        """Keep frame `name`'s pose inliers [I, 2] (keypoint, 3D point id)."""
        ids = np.full(num_keypoints, -1, np.int64)
        ids[inliers[:, 0]] = inliers[:, 1]
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(name).with_suffix(".tmp.npy")
        np.save(tmp, ids)
        os.replace(tmp, self._path(name))
        self._ids[name] = ids

    def features(self, key: str) -> Features:
        if key.startswith(FRAME):
            return self.store.read(key[len(FRAME):])
        return self.model.features(key)

    def point_ids(self, key: str) -> np.ndarray:
        if not key.startswith(FRAME):
            return self.model.point_ids(key)
        name = key[len(FRAME):]
        if name not in self._ids:
            self._ids[name] = np.load(self._path(name))
        return self._ids[name]

    def xyz(self, ids: np.ndarray) -> np.ndarray:
        return self.model.xyz(ids)
