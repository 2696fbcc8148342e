"""Which features a matches.h5 was made from, so that matches of other keypoints are refused.

Matches are indices into two images' keypoints: reused against other keypoints (another
extractor, another resize, features.h5 extracted again differently) they are silently wrong.
matches.h5 therefore records

- on its root (`EXTRACTOR_ATTR`): the extractor record of the features.h5 it was made from
  (the `matchlab_extractor` attribute `pipeline.extract_features` writes), when it has one;
- with every pair (`layout.KEYPOINTS_ATTRS`): a digest of each image's keypoints.

`check_same_features` compares both with the features about to be used, before any work.
A file made by another tool, or by an older matchlab, carries neither and is accepted.
"""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np

from ..errors import OutputMismatchError
from .layout import FeatureStore, MatchStore
from .tree import has_entries

EXTRACTOR_ATTR = "matchlab_features"  # on matches.h5's root
FEATURES_RECORD = "matchlab_extractor"  # on features.h5's root (written by the extract stage)


def keypoints_digest(keypoints: np.ndarray) -> str:
    """'N:h' for keypoints [N, 2]: their count and the first 16 hex digits of the SHA-1 of
    their float32 values (about 0.1 ms for 4096 keypoints)."""
    array = np.ascontiguousarray(keypoints, dtype=np.float32).reshape(-1, 2)
    return f"{len(array)}:{hashlib.sha1(array.tobytes()).hexdigest()[:16]}"


def _check_extractor(features: FeatureStore, matches: MatchStore) -> None:
    current = features.file.attrs.get(FEATURES_RECORD)
    if current is None:
        return
    stored = matches.file.attrs.get(EXTRACTOR_ATTR)
    if stored is None:
        if not has_entries(matches.file):  # a new file remembers the features it is made from
            matches.file.attrs[EXTRACTOR_ATTR] = current
            matches.file.flush()
        return
    if json.loads(stored) != json.loads(current):
        raise OutputMismatchError(
            f"{matches.path} holds matches of features extracted with {_describe(stored)}, but "
            f"{features.path} now holds features extracted with {_describe(current)}; its "
            f"matches index other keypoints and would be silently wrong. Delete {matches.path} "
            f"(or use another output) to match again.")


def _describe(record: str) -> str:
    value = json.loads(record)
    conf = value.get("conf", {})
    return f"{value.get('name')} ({', '.join(f'{k}={v!r}' for k, v in sorted(conf.items()))})"


def check_same_features(features: FeatureStore, matches: MatchStore,
                        pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Refuse (`OutputMismatchError`, naming the files and what differs) when `matches` holds
    matches made from other features than `features`, for the extractor record or for any of
    `pairs` present in it. Returns {image name: keypoints digest} of every image in `pairs`,
    for `MatchStore.write(..., keypoints=...)`. A new matches.h5 records the extractor."""
    _check_extractor(features, matches)
    digests: dict[str, str] = {}

    def digest(name: str) -> str:
        if name not in digests:
            digests[name] = keypoints_digest(features.read_keypoints(name))
        return digests[name]

    changed = []
    for name0, name1 in pairs:
        stored = matches.keypoints_digests(name0, name1)
        if stored is None:
            continue
        for name, was in zip((name0, name1), stored):
            if was != digest(name):
                changed.append((name, was, digests[name]))
    if changed:
        name, was, now = changed[0]
        more = len({c[0] for c in changed}) - 1
        raise OutputMismatchError(
            f"{matches.path} holds matches made from other keypoints than those now in "
            f"{features.path}: image {name!r} had {was.split(':')[0]} keypoints then and has "
            f"{now.split(':')[0]} now (keypoints digest {was} vs {now})"
            + (f", and {more} other image(s) changed too" if more > 0 else "")
            + f". Its matches would be silently wrong: delete {matches.path} (or use another "
            f"output) to match again.")
    for name0, name1 in pairs:
        digest(name0)
        digest(name1)
    return digests
