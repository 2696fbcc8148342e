"""Pair selection for `run_sfm` / `matchlab sfm --pairs SPEC`: a pairs spec (parsed by
`pairs.parse_pairs_spec`) into a list of image pairs, computing whatever it needs (global
descriptors) into output_dir so that the stage resumes like the others.

Specs (components joined by '+' are unioned, then de-duplicated in either order):
  exhaustive              all n(n-1)/2 pairs
  sequential:N            each image with its next N (list order: sorted names = video order)
  retrieval:K             each image with its K most similar others by global descriptor
                          (hloc's pairs_from_retrieval with self excluded, but no similarity
                          threshold: see `retrieval_pairs`)
  sequential:N+retrieval:K  video: a window plus loop closures
  file:PATH               a pairs file (alone; PATH may contain ':' and '+')
  nearest:K, covisible:K  by known camera poses (`poses` given; see `pose_pairs`)

Global descriptors (`global_descriptor`), stored in output_dir/global.h5 (hloc layout):
  mixvpr          MixVPR with the checkpoint found by `find_mixvpr_checkpoint`
  mixvpr:PATH     MixVPR with that checkpoint
  vlad            VLAD of the local features in output_dir/features.h5, vocabulary fitted on
                  the collection (output_dir/vlad_vocabulary.npz, seeded, kept for resumes)
  auto            mixvpr when a checkpoint is found, else vlad
global.h5 records what made it (attribute `matchlab_global`); descriptors made another way are
recomputed rather than mixed.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .pairs import Pair, dedupe_pairs, parse_pairs_spec, spec_part_pairs
from .pose_pairs import POSE_SPEC_KINDS, pose_pairs

__all__ = ["select_pairs", "retrieval_pairs", "compute_global_descriptors",
           "read_global_descriptors", "resolve_global_method", "GLOBAL_RECORD"]

GLOBAL_RECORD = "matchlab_global"
VOCABULARY_FILE = "vlad_vocabulary.npz"
# what the VLAD fallback uses (see benchmarks/vlad_choices.py and README "Retrieval")
VLAD_CONF = {"num_clusters": 64, "intra_norm": False, "power": 0.5, "max_training": 50_000}


# ----------------------------------------------------------------------------- retrieval

def _select(names: Sequence[str], prefix, listed, what: str) -> list[str]:
    """hloc's parse_names: a prefix (str or several), else an explicit list, else all."""
    if prefix is not None:
        prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        chosen = [n for n in names if n.startswith(prefixes)]
        if not chosen:
            raise ValueError(f"no {what} image name starts with {prefixes}")
        return chosen
    if listed is not None:
        if isinstance(listed, (str, os.PathLike)):
            listed = [line.strip() for line in Path(listed).read_text().splitlines()
                      if line.strip() and not line.strip().startswith("#")]
        known = set(names)
        missing = [n for n in listed if n not in known]
        if missing:
            raise ValueError(f"{len(missing)} {what} image(s) have no global descriptor: "
                             f"{missing[:5]}")
        return list(listed)
    return list(names)


def retrieval_pairs(names: Sequence[str], descriptors: np.ndarray, k: int, *,
                    query_prefix=None, query_list=None, db_prefix=None, db_list=None,
                    min_score: float | None = None, device=None) -> list[Pair]:
    """Top-k pairs (query, database image) by descriptor similarity, de-duplicated.

    names / descriptors [N, D]: every image's global descriptor (L2-normalised), float16 or
    float32. Queries and database default to all names (all-vs-all); prefixes or lists
    select them as in hloc. An image is never paired with itself; pairs with similarity
    below min_score are dropped (None keeps all; hloc uses 0, which suits NetVLAD / MixVPR
    but not VLAD with a vocabulary fitted on the collection: its similarities are centred on
    0, so half the top-K of a one-scene collection fall below it). Order: by query, then
    similarity.
    """
    from .search import topk_similar

    names = list(names)
    if len(names) != len(descriptors):
        raise ValueError(f"{len(names)} names but {len(descriptors)} descriptors")
    index = {n: i for i, n in enumerate(names)}
    queries = _select(names, query_prefix, query_list, "query")
    database = _select(names, db_prefix, db_list, "database")
    qi = np.array([index[n] for n in queries], np.int64)
    di = np.array([index[n] for n in database], np.int64)
    all_rows = len(qi) == len(names) and (qi == np.arange(len(names))).all()
    q = descriptors if all_rows else descriptors[qi]
    db = descriptors if len(di) == len(names) and (di == np.arange(len(names))).all() \
        else descriptors[di]
    _, found = topk_similar(q, db, k, query_ids=qi, db_ids=di, min_score=min_score,
                            device=device)
    pairs = []
    for row, cols in enumerate(found):
        for col in cols:
            if col >= 0:
                pairs.append((queries[row], database[col]))
    return dedupe_pairs(pairs)


# ----------------------------------------------------------------------------- descriptors

def read_global_descriptors(path: str | os.PathLike, names: Sequence[str] | None = None,
                            half: bool | None = None) -> tuple[list[str], np.ndarray]:
    """(names, descriptors [N, D]) from an hloc global-descriptor file.

    half: store as float16 (None: when the float32 array would exceed 1 GiB).
    """
    from ..store import GlobalStore

    with GlobalStore(path, "r") as store:
        names = list(store.names()) if names is None else list(names)
        if not names:
            return names, np.zeros((0, 0), np.float32)
        first = store.read(names[0])
        if half is None:
            half = len(names) * first.numel() * 4 > (1 << 30)
        out = np.empty((len(names), first.numel()), np.float16 if half else np.float32)
        for i, name in enumerate(names):
            row = store.read(name)
            if row.numel() != out.shape[1]:
                raise ValueError(f"{path}: {name!r} has a {row.numel()}-d descriptor, others "
                                 f"{out.shape[1]}-d")
            out[i] = row.numpy()
    return names, out


def resolve_global_method(method: str) -> tuple[str, Path | None]:
    """'auto' | 'vlad' | 'mixvpr' | 'mixvpr:PATH' -> ('mixvpr', checkpoint) or ('vlad', None)."""
    from .mixvpr import MixVPRWeightsError, find_mixvpr_checkpoint, DOWNLOAD_HINT

    kind, sep, arg = method.partition(":")
    kind = kind.strip().lower()
    if kind == "vlad" and not sep:
        return "vlad", None
    if kind == "mixvpr":
        path = Path(arg) if sep else find_mixvpr_checkpoint()
        if path is None or not path.is_file():
            raise MixVPRWeightsError(f"MixVPR checkpoint not found"
                                     f"{': ' + str(path) if path else ''}. " + DOWNLOAD_HINT)
        return "mixvpr", path
    if kind == "auto" and not sep:
        path = find_mixvpr_checkpoint()
        return ("mixvpr", path) if path is not None else ("vlad", None)
    raise ConfigError(f"bad global descriptor {method!r}: expected auto, vlad, mixvpr or "
                      f"mixvpr:PATH")


def _vlad_vocabulary(features_path: Path, names: Sequence[str], vocab_path: Path):
    from ..store import FeatureStore
    from .vlad import VLAD

    if vocab_path.is_file():
        vlad = VLAD.load(vocab_path)
        wanted = {**VLAD.default_conf, **VLAD_CONF}
        with FeatureStore(features_path, "r") as store:
            dim = store.read(names[0]).descriptors.shape[1]
        if vlad.conf == wanted and vlad.centroids.shape[1] == dim:
            return vlad
    vlad = VLAD(**VLAD_CONF)
    per_image = max(1, math.ceil(vlad.conf["max_training"] / len(names)))
    rng = np.random.default_rng(vlad.conf["seed"])
    sample = []
    with FeatureStore(features_path, "r") as store:
        for name in names:  # keep at most per_image descriptors of each image in memory
            desc = store.read(name).descriptors.numpy()
            if len(desc) > per_image:
                desc = desc[np.sort(rng.choice(len(desc), per_image, replace=False))]
            sample.append(desc)
    vlad.fit(sample)
    vlad.save(vocab_path)
    return vlad


def compute_global_descriptors(names: Sequence[str], *, image_dir: str | Path,
                               output: str | Path, method: str = "auto",
                               features: str | Path | None = None,
                               vocabulary: str | Path | None = None, progress: bool = True,
                               log: Callable[[str], None] | None = None,
                               fit_names: Sequence[str] | None = None,
                               executor=None) -> dict:
    """Global descriptors of `names` into `output` (hloc layout), resuming what is there.

    method: see the module docstring. features: local features file for VLAD (required for
    it); vocabulary: where the VLAD vocabulary is kept (default: next to `output`).
    executor: run MixVPR on its workers (matchlab.distributed; VLAD, which reads the
    features file, runs here).
    Returns {"method", "done", "already", "seconds", "weights"}.
    """
    from tqdm import tqdm

    from ..store import GlobalStore

    start = time.perf_counter()
    kind, checkpoint = resolve_global_method(method)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    names = list(names)
    if kind == "vlad":
        if features is None or not Path(features).is_file():
            raise FileNotFoundError(f"VLAD global descriptors need the local features file "
                                    f"(features.h5); not found: {features}")
        vocab_path = Path(vocabulary) if vocabulary else output.with_name(VOCABULARY_FILE)
        encoder = _vlad_vocabulary(Path(features), list(fit_names or names), vocab_path)
        record = {"method": "vlad", "vocabulary": encoder.fingerprint()}
    else:
        from .mixvpr import MixVPR

        encoder = MixVPR(weights=str(checkpoint.resolve()))  # the same path on workers
        record = {"method": "mixvpr", "dim": encoder.dim, "weights": checkpoint.name}
    text = json.dumps(record, sort_keys=True)
    if output.exists():
        with GlobalStore(output, "r") as store:
            previous = store.file.attrs.get(GLOBAL_RECORD)
            stale = len(store) > 0 and previous != text
        if stale:
            if log:
                log(f"{output} holds descriptors made otherwise ({previous}); recomputing")
            output.unlink()
    done = 0
    with GlobalStore(output) as store:
        if store.file.attrs.get(GLOBAL_RECORD) != text:
            store.file.attrs[GLOBAL_RECORD] = text
            store.file.flush()
        todo = [n for n in names if n not in store]
        bar = tqdm(total=len(todo), desc=f"global {kind}", unit="img",
                   disable=None if progress else True)
        if kind == "vlad":
            from ..store import FeatureStore

            with FeatureStore(features, "r") as feats:
                for name in todo:
                    store.write(name, encoder.encode(feats.read(name).descriptors))
                    done += 1
                    bar.update(1)
        elif executor is not None:
            from ..distributed.stages import describe_remote

            done = describe_remote(executor, encoder, Path(image_dir), todo, store, bar)
        else:
            step = encoder.conf["batch_size"]
            image_dir = Path(image_dir)
            for i in range(0, len(todo), step):
                chunk = todo[i:i + step]
                for name, row in zip(chunk, encoder.extract_batch([image_dir / n for n in chunk])):
                    store.write(name, row)
                done += len(chunk)
                bar.update(len(chunk))
        bar.close()
    return {"method": kind, "weights": str(checkpoint) if checkpoint else None, "done": done,
            "already": len(names) - len(todo),
            "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- entry point

def select_pairs(spec: str, names: Sequence[str], *, image_dir: str | Path,
                 output_dir: str | Path, global_descriptor: str = "auto",
                 progress: bool = True, min_score: float | None = None,
                 log: Callable[[str], None] | None = None,
                 poses: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 executor=None) -> list[Pair]:
    """Pairs for `spec` (module docstring) among `names`.

    poses: {name: (camera centre [3], viewing direction [3])} of every name, when the
    poses are known; enables the nearest:K and covisible:K parts (`pose_pairs`).

    Retrieval computes global descriptors into output_dir/global.h5 first (resumable); the
    VLAD fallback reads output_dir/features.h5, which run_sfm writes before selecting pairs.
    executor: where MixVPR runs (`compute_global_descriptors`).
    """
    names, pairs = list(names), []
    for kind, arg in parse_pairs_spec(spec, with_poses=poses is not None):
        if kind in POSE_SPEC_KINDS:
            pairs += pose_pairs(kind, int(arg), names, poses)
            continue
        if kind != "retrieval":
            pairs += spec_part_pairs(kind, arg, names)
            continue
        global_path = Path(output_dir) / "global.h5"
        compute_global_descriptors(names, image_dir=image_dir, output=global_path,
                                   method=global_descriptor,
                                   features=Path(output_dir) / "features.h5",
                                   progress=progress, log=log, executor=executor)
        _, descriptors = read_global_descriptors(global_path, names)
        pairs += retrieval_pairs(names, descriptors, int(arg), min_score=min_score)
    return dedupe_pairs(pairs)
