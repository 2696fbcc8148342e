"""The stages of `matchlab extract`, `matchlab match` and `matchlab sfm`, as plain functions.

Each stage reads its inputs from disk, skips work already in its output file and writes
items one at a time, so an interrupted run resumes where it stopped. A bad image is
reported in the stage's `StageReport` and skipped; it never stops the run.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from .images import ImageError, list_images
from .store import FeatureStore, MatchStore
from .types import Features


@dataclass
class StageReport:
    """What a stage did: items done now, items found done already, and failures (name -> why)."""

    stage: str
    done: int = 0
    already: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        text = f"{self.stage:<10} done {self.done}, already there {self.already}, " \
               f"failed {len(self.failed)}, {self.seconds:.1f} s"
        return text + "".join(f"\n    skipped {name}: {why}" for name, why in self.failed.items())


def extract_features(image_dir: str | Path, names: Sequence[str], features_path: str | Path,
                     extractor: Callable[[Any], Features], as_half: bool = False,
                     progress: bool = True) -> StageReport:
    """Extract features of `names` (relative to image_dir) into features_path (hloc layout)."""
    report = StageReport("extract")
    start = time.perf_counter()
    image_dir = Path(image_dir)
    with FeatureStore(features_path) as store:
        todo = [n for n in names if n not in store]
        report.already = len(names) - len(todo)
        for name in tqdm(todo, desc="extract", unit="img", disable=not progress):
            try:
                features = extractor(image_dir / name)
            except ImageError as e:
                report.failed[name] = e.reason
                continue
            store.write(name, features, as_half=as_half)
            report.done += 1
    report.seconds = time.perf_counter() - start
    return report


class _FeatureCache:
    """Features read from a store, the most recently used kept in memory (pairs share images)."""

    def __init__(self, store: FeatureStore, size: int = 64):
        self.store, self.size, self.items = store, size, OrderedDict()

    def __getitem__(self, name: str) -> Features:
        if name in self.items:
            self.items.move_to_end(name)
        else:
            self.items[name] = self.store.read(name)
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        return self.items[name]


def match_pairs(pairs: Sequence[tuple[str, str]], features_path: str | Path,
                matches_path: str | Path, matcher: Callable[[Features, Features], Any],
                progress: bool = True, batch_size: int = 8) -> StageReport:
    """Match every pair into matches_path; pairs naming an image absent from features_path
    raise KeyError listing them before any work is done.

    A matcher with a `match_batch(list of (feats0, feats1)) -> list of Matches` method gets
    `batch_size` pairs at a time (its results must equal pair-by-pair matching); others are
    called pair by pair. The same Features object is passed for an image that occurs in
    several pairs of a batch, so a matcher may cache per-image work by identity."""
    report = StageReport("match")
    start = time.perf_counter()
    with FeatureStore(features_path, "r") as features, MatchStore(matches_path) as store:
        known = set(features.names())
        missing = sorted({n for pair in pairs for n in pair if n not in known})
        if missing:
            raise KeyError(f"{len(missing)} image(s) named in the pairs have no features in "
                           f"{features_path}: {', '.join(map(repr, missing[:10]))}"
                           + (" ..." if len(missing) > 10 else ""))
        todo = [p for p in pairs if p not in store]
        report.already = len(pairs) - len(todo)
        cache = _FeatureCache(features)
        batched = hasattr(matcher, "match_batch") and batch_size > 1
        step = batch_size if batched else 1
        with tqdm(total=len(todo), desc="match", unit="pair", disable=not progress) as bar:
            for start_index in range(0, len(todo), step):
                chunk = todo[start_index:start_index + step]
                inputs = [(cache[a], cache[b]) for a, b in chunk]
                results = (matcher.match_batch(inputs) if batched
                           else [matcher(*pair) for pair in inputs])
                for (name0, name1), result in zip(chunk, results):
                    store.write(name0, name1, result)  # each pair is durable once written
                report.done += len(chunk)
                bar.update(len(chunk))
    report.seconds = time.perf_counter() - start
    return report


def find_duplicates(image_dir: str | Path, names: Sequence[str]) -> dict[str, str]:
    """{name: name of the first identical file} for byte-identical images."""
    seen: dict[str, str] = {}
    duplicates = {}
    for name in names:
        digest = hashlib.sha1((Path(image_dir) / name).read_bytes()).hexdigest()
        if digest in seen:
            duplicates[name] = seen[digest]
        else:
            seen[digest] = name
    return duplicates


@dataclass
class SfMConfig:
    """Options of `run_sfm` (and of `matchlab sfm`)."""

    features: str = "superpoint"
    matcher: str = "nn"
    pairs: str = "exhaustive"  # exhaustive | sequential:N | file:PATH
    mapper: str = "incremental"  # incremental | global
    resize: int | None = 1024
    max_keypoints: int | None = 4096
    camera_model: str = "SIMPLE_RADIAL"
    camera_mode: str = "auto"
    global_descriptor: str = "auto"  # for retrieval pairs
    matcher_conf: dict = field(default_factory=dict)


def run_sfm(image_dir: str | Path, output_dir: str | Path, config: SfMConfig | None = None,
            progress: bool = True, log: Callable[[str], None] = print,
            colmap_log: bool = False) -> dict:
    """Image folder -> features.h5, pairs.txt, matches.h5, database.db, sparse model.

    Every stage is resumable; returns (and writes to output_dir/summary.json) the model
    summary plus the stage reports and the images that were skipped and why.
    """
    from .registry import load_extractor, load_matcher
    from .retrieval.pairs import write_pairs_file
    from .retrieval.select import select_pairs
    from .sfm import create_database, model_summary, reconstruct, verify

    import pycolmap

    if not colmap_log:  # COLMAP's INFO lines drown the progress bars; keep its warnings
        pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 1)
    config = config or SfMConfig()
    image_dir, output_dir = Path(image_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = list_images(image_dir)
    if not names:
        raise FileNotFoundError(f"no images found in {image_dir}")
    skipped = {n: f"duplicate of {o}" for n, o in find_duplicates(image_dir, names).items()}
    reports = []

    extractor = load_extractor(config.features, resize=config.resize,
                               max_keypoints=config.max_keypoints)
    candidates = [n for n in names if n not in skipped]
    reports.append(extract_features(image_dir, candidates, output_dir / "features.h5",
                                    extractor, progress=progress))
    skipped.update(reports[-1].failed)
    good = [n for n in names if n not in skipped]
    if len(good) < 2:
        raise RuntimeError(f"fewer than two readable images in {image_dir}; skipped: {skipped}")

    pairs = select_pairs(config.pairs, good, image_dir=image_dir, output_dir=output_dir,
                         global_descriptor=config.global_descriptor, progress=progress)
    write_pairs_file(output_dir / "pairs.txt", pairs)
    matcher = load_matcher(config.matcher, **config.matcher_conf)
    reports.append(match_pairs(pairs, output_dir / "features.h5", output_dir / "matches.h5",
                               matcher, progress=progress))

    start = time.perf_counter()
    with FeatureStore(output_dir / "features.h5", "r") as features:
        keypoints = {n: features.read_keypoints(n) for n in good}
    with MatchStore(output_dir / "matches.h5", "r") as matches:
        pair_matches = {(a, b): matches.read_pairs(a, b)[0] for a, b in pairs}
    create_database(output_dir / "database.db", image_dir, good, keypoints, pair_matches,
                    camera_model=config.camera_model, camera_mode=config.camera_mode)
    verify(output_dir / "database.db", pairs)
    reports.append(StageReport("database", done=len(pairs), seconds=time.perf_counter() - start))

    start = time.perf_counter()
    rec = reconstruct(output_dir / "database.db", image_dir, output_dir, mapper=config.mapper,
                      image_names=good)
    reports.append(StageReport("map", done=1, seconds=time.perf_counter() - start))
    summary = model_summary(rec, good)
    summary["skipped"] = skipped
    summary["config"] = asdict(config)
    summary["stages"] = [asdict(r) for r in reports]
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for report in reports:
        log(report.line())
    log(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    rows = [
        ("registered images", f"{summary['num_reg_images']} / {summary['num_input_images']}"),
        ("3D points", summary["num_points3D"]),
        ("mean track length", f"{summary['mean_track_length']:.2f}"),
        ("mean reprojection error", f"{summary['mean_reprojection_error']:.3f} px"),
        ("not registered", ", ".join(summary["unregistered"]) or "-"),
        ("skipped", ", ".join(f"{k} ({v})" for k, v in summary.get("skipped", {}).items()) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
