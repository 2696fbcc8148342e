"""Read-only mappings over features.h5 / matches.h5 that read one item per access, so that
a consumer walking thousands of images or pairs (`sfm.create_database`, the sfm report)
holds one item at a time rather than a dict of all of them.

    with KeypointsView("features.h5", names) as keypoints, \\
            MatchesView("matches.h5", pairs) as matches:
        create_database(db, image_dir, names, keypoints, matches)

Inside `with`, the file stays open (fast repeated reads); outside, each access opens it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .layout import FeatureStore, MatchStore


class _View(Mapping):
    store_class: type = FeatureStore

    def __init__(self, path: str | os.PathLike, keys: Sequence) -> None:
        self.path, self._keys, self._store = Path(path), list(keys), None

    def __enter__(self):
        self._store = self.store_class(self.path, "r")
        return self

    def __exit__(self, *exc) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __getitem__(self, key) -> np.ndarray:
        if self._store is not None:
            return self._read(self._store, key)
        with self.store_class(self.path, "r") as store:
            return self._read(store, key)

    def items(self) -> Iterator:  # one open file for the whole walk
        if self._store is not None:
            yield from ((key, self._read(self._store, key)) for key in self._keys)
            return
        with self:
            yield from ((key, self._read(self._store, key)) for key in self._keys)

    def _read(self, store, key) -> np.ndarray:
        raise NotImplementedError


class KeypointsView(_View):
    """{name: keypoints [N, 2] float32 px} of `names`, read from features.h5 on access
    (a name not in the file raises `MissingItemError`, a KeyError)."""

    store_class = FeatureStore

    def _read(self, store: FeatureStore, key: str) -> np.ndarray:
        return store.read_keypoints(key)


class MatchesView(_View):
    """{(name0, name1): [M, 2] int64 keypoint index pairs} of `pairs`, read from matches.h5
    on access (flipped as asked when the file holds (name1, name0); a pair not in the file
    raises `MissingItemError`, a KeyError)."""

    store_class = MatchStore

    def _read(self, store: MatchStore, key: tuple[str, str]) -> np.ndarray:
        return store.read_indices(*key)
