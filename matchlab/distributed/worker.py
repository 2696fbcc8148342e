"""The worker side of the executors: a process that builds one model from a `WorkerSpec`
and runs the stages' tasks with it. Results travel as numpy arrays (`features_to_arrays`),
which Ray passes without pickling their data (`payload`).

Tasks:
- `extract(name, source)`: source is the image's path on a shared file system, or its bytes
  (--ship-images); ("ok", feature arrays) or ("failed", why) for an unreadable image;
- `match(pairs, features, gravity, batch_size)`: gravity {name: down direction} or None;
  features is the path of features.h5 (read through a cache kept between tasks: chunks of
  pairs in visit order share images) or {name: feature arrays} shipped by the driver;
  [(matches0, scores0)] in the order of pairs;
- `describe(sources)`: global descriptors [len(sources), D] (MixVPR) of paths or bytes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ImageError
from ..memory import (IMAGES_BETWEEN_TRIMS, PAIRS_BETWEEN_TRIMS, FreedMemoryReleaser,
                      reuse_freed_memory)
from .executors import WorkerSpec
from .payload import features_from_arrays, features_to_arrays


class _Shipped(dict):
    """{name: feature arrays} sent with a task, read as Features on the worker's device."""

    def __init__(self, arrays: dict, device) -> None:
        super().__init__({n: features_from_arrays(a).to(device) for n, a in arrays.items()})


class Worker:
    """One model, built once; see the module docstring for the tasks."""

    def __init__(self, spec: WorkerSpec, device: str = "cpu") -> None:
        reuse_freed_memory()  # a process of its own, as the `matchlab` command
        self.device = torch.device(device)
        self.model = spec.build(self.device)
        self.features_path, self.cache = None, None
        self.release_pairs = FreedMemoryReleaser(every=PAIRS_BETWEEN_TRIMS)
        self.release_images = FreedMemoryReleaser(every=IMAGES_BETWEEN_TRIMS)

    def pid(self) -> int:
        """The worker's process id (a test kills it to check that tasks are retried)."""
        return os.getpid()

    def _image(self, source: str | bytes, name: str, grayscale: bool):
        """What the model takes: the path itself, or the decoded bytes [C, H, W]."""
        if isinstance(source, bytes):
            from ..images import decode_image

            return decode_image(source, name, grayscale=grayscale)
        return Path(source)

    def extract(self, name: str, source: str | bytes) -> tuple[str, Any]:
        self.release_images.step()
        try:
            image = self._image(source, name, self.model.grayscale)
            return "ok", features_to_arrays(self.model(image))
        except ImageError as e:
            return "failed", e.reason

    def _features(self, features: str | dict):
        if not isinstance(features, str):
            return _Shipped(features, self.device)
        if features != self.features_path:  # the same file for all tasks of a stage
            from ..pipeline import _FeatureCache
            from ..store import FeatureStore

            self.features_path = features
            self.cache = _FeatureCache(FeatureStore(features, "r"), device=self.device)
        return self.cache

    def match(self, pairs: Sequence[tuple[str, str]], features: str | dict,
              gravity: dict[str, Any] | None, batch_size: int
              ) -> list[tuple[np.ndarray, np.ndarray]]:
        from ..pipeline import matched_batches

        self.release_pairs.step(len(pairs))
        return [(r.matches0.cpu().numpy(), r.scores0.cpu().numpy())
                for _, results in matched_batches(self.model, pairs, self._features(features),
                                                  batch_size, gravity)
                for r in results]

    def describe(self, names: Sequence[str], sources: Sequence[str | bytes]) -> np.ndarray:
        images = [self._image(s, n, grayscale=False) for n, s in zip(names, sources)]
        return self.model.extract_batch(images).numpy()
