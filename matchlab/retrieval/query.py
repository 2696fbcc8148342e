"""Retrieval of new images (queries) against the images of an existing model.

The queries are described by the global descriptor the model's images were described with:
the method and, for VLAD, the vocabulary recorded in the model folder's global.h5 (written
by `matchlab sfm --pairs retrieval:K`). A model folder without global.h5 gets VLAD
descriptors of its images computed from its features.h5 into a work folder (vocabulary
fitted on the model's images, kept there for resumes). A model of no more than K images
needs no retrieval: every query is matched to all of them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..types import Features
from .select import (GLOBAL_RECORD, VOCABULARY_FILE, compute_global_descriptors,
                     read_global_descriptors, resolve_global_method)

__all__ = ["QueryRetriever"]


class QueryRetriever:
    """The k model images most similar to a query.

    model_names: the model's images (names as in its features.h5 / global.h5).
    sfm_dir:     the model folder (features.h5, optionally global.h5 and its vocabulary).
    work_dir:    where descriptors of the model's images go when sfm_dir has none.
    method:      'auto' (the model's own), 'vlad' or 'mixvpr'; a method other than the one
                 the model's global.h5 was made with is a ConfigError (descriptors of two
                 methods cannot be compared).
    `description` says in words how queries are retrieved (for logs and records).
    """

    def __init__(self, model_names: Sequence[str], k: int, *, sfm_dir: str | Path,
                 work_dir: str | Path, method: str = "auto",
                 log: Callable[[str], None] | None = None) -> None:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        self.names, self.k = list(model_names), int(k)
        self.encoder = self.descriptors = None
        if len(self.names) <= self.k:
            self.method = "all"
            self.description = (f"all {len(self.names)} model images (the model has no more "
                                f"than k={self.k}; no retrieval needed)")
            return
        sfm_dir, work_dir = Path(sfm_dir), Path(work_dir)
        path, vocabulary = sfm_dir / "global.h5", sfm_dir / VOCABULARY_FILE
        if not path.is_file():
            if method not in ("auto", "vlad"):
                raise ConfigError(f"{sfm_dir} has no global.h5; --global {method} would need "
                                  f"the model's images: use --global vlad (computed from its "
                                  f"features.h5) or run sfm with --pairs retrieval:K")
            path, vocabulary = work_dir / "model-global.h5", work_dir / VOCABULARY_FILE
            if log is not None:
                log(f"{sfm_dir} has no global descriptors: computing VLAD of the "
                    f"{len(self.names)} model images into {path}")
            compute_global_descriptors(self.names, image_dir=sfm_dir, output=path,
                                       method="vlad", features=sfm_dir / "features.h5",
                                       vocabulary=vocabulary, progress=False)
        record = _global_record(path)
        self.method = record.get("method")
        if method != "auto" and method.partition(":")[0] != self.method:
            raise ConfigError(f"the model's global descriptors ({path}) are {self.method}; "
                              f"queries must use the same (--global auto), not {method}")
        self.encoder = self._encoder(record, vocabulary, method)
        _, self.descriptors = read_global_descriptors(path, self.names)
        self.description = f"top {self.k} of {len(self.names)} model images by {self.method}"

    @staticmethod
    def _encoder(record: dict, vocabulary: Path, method: str):
        if record.get("method") == "vlad":
            from .vlad import VLAD

            if not vocabulary.is_file():
                raise ConfigError(f"VLAD vocabulary {vocabulary} not found; the model's VLAD "
                                  f"descriptors cannot be matched without it")
            encoder = VLAD.load(vocabulary)
            if encoder.fingerprint() != record.get("vocabulary"):
                raise ConfigError(f"{vocabulary} is not the vocabulary the model's global "
                                  f"descriptors were made with")
            return encoder
        if record.get("method") == "mixvpr":
            from .mixvpr import MixVPR

            _, checkpoint = resolve_global_method(method if ":" in method else "mixvpr")
            if checkpoint.name != record.get("weights"):
                raise ConfigError(f"the model's MixVPR descriptors come from "
                                  f"{record.get('weights')}, found {checkpoint}")
            return MixVPR(weights=str(checkpoint))
        raise ConfigError(f"unknown global descriptor record {record}")

    def __call__(self, image_path: str | Path, features: Features) -> list[str]:
        """Names of the model images to match the query with, most similar first."""
        from .search import topk_similar

        if self.method == "all":
            return list(self.names)
        if self.method == "vlad":
            query = self.encoder.encode(features.descriptors)
        else:
            query = self.encoder.extract_batch([image_path])[0]
        _, found = topk_similar(query.reshape(1, -1).numpy().astype(np.float32),
                                self.descriptors.astype(np.float32), self.k)
        return [self.names[i] for i in found[0] if i >= 0]


def _global_record(path: Path) -> dict:
    from ..store import GlobalStore

    with GlobalStore(path, "r") as store:
        text = store.file.attrs.get(GLOBAL_RECORD)
    if text is None:
        raise ConfigError(f"{path} does not record how its descriptors were made (not "
                          f"written by matchlab); queries cannot be described the same way")
    return json.loads(text)
