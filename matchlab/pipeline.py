"""The stages of `matchlab extract`, `matchlab match` and `matchlab sfm`, as plain functions.

Each stage reads its inputs from disk, skips work already in its output file and writes
items one at a time, so an interrupted run resumes where it stopped. A bad image is
reported in the stage's `StageReport` and skipped; it never stops the run.
"""
from __future__ import annotations

import hashlib
import shutil
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from .io.gravity import read_gravity
from .errors import OutputMismatchError, ReconstructionError
from .extractors import DEFAULT_MAX_KEYPOINTS
from .images import ImageError, list_images
from .matchers.base import check_batch_size
from .memory import IMAGES_BETWEEN_TRIMS, PAIRS_BETWEEN_TRIMS, FreedMemoryReleaser
from .prefetch import prefetched
from .registry import ConfigError
from .store import FeatureStore, KeypointsView, MatchStore, MatchesView
from .store.identity import check_same_features
from .store.tree import has_entries
from .types import Features

if TYPE_CHECKING:
    from .distributed.executors import Executor
    from .extractors.base import Extractor
    from .matchers.base import Matcher


@dataclass
class StageReport:
    """What a stage did: items done now, items found done already, and failures (name -> why)."""

    stage: str
    done: int = 0
    already: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    matches: int = 0  # match stage: matches written in this run
    reads: int = 0  # match stage: images whose features were read from disk
    batch_size: int = 0  # match stage: pairs per match_batch call

    def line(self, limit: int = 10) -> str:
        """One line, plus one per failed item (the first `limit`, then a count)."""
        text = f"{self.stage:<10} done {self.done}, already there {self.already}, " \
               f"failed {len(self.failed)}, {self.seconds:.1f} s"
        failed = list(self.failed.items())
        text += "".join(f"\n    skipped {name}: {why}" for name, why in failed[:limit])
        if len(failed) > limit:
            text += f"\n    ... and {len(failed) - limit} more (summary.json lists all)"
        return text


def model_record(name: str, model) -> dict:
    """What made a file's contents: the model's name and the options that change results
    (all but the model class's declared `result_neutral_options`), `precision` as the dtype
    it resolved to on the model's device (call it after moving the model there)."""
    neutral = set(model.result_neutral_options)
    recorded = model.record_conf() if hasattr(model, "record_conf") else model.conf
    conf = {k: v for k, v in recorded.items() if k not in neutral}
    return json.loads(json.dumps({"name": name, "conf": conf}, sort_keys=True, default=str))


def check_model_record(store, key: str, record: dict | None, what: str, option: str) -> None:
    """Refuse to mix results of different models / settings in one output file; a new file
    remembers its record (files made by other tools carry none and are accepted)."""
    if record is None:
        return
    stored = store.file.attrs.get(key)
    if stored is None:
        if not has_entries(store.file):
            store.file.attrs[key] = json.dumps(record, sort_keys=True)
            store.file.flush()
        return
    previous = json.loads(stored)
    if "conf" in previous:  # options the model no longer records (now declared neutral)
        previous["conf"] = {k: v for k, v in previous["conf"].items() if k in record["conf"]}
        if "precision" in record["conf"]:  # files from before `precision` was recorded
            if previous["conf"].get("precision", "auto") == "auto":  # resolved: float32 on CPUs
                previous["conf"]["precision"] = "float32"
    if previous == record:
        return
    if previous.get("name") != record["name"]:
        was, now = previous.get("name"), record["name"]
    else:
        old, new = previous.get("conf", {}), record["conf"]
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        was = ", ".join(f"{k}={old.get(k)!r}" for k in keys)
        now = ", ".join(f"{k}={new.get(k)!r}" for k in keys)
    raise OutputMismatchError(
        f"{store.path} already holds {what} made with {was}, and this run asks for {now}; "
        f"mixing them in one file would be silently wrong. Use another output file or "
        f"folder, or the same {option} as before.")


def extract_features(image_dir: str | Path, names: Sequence[str], features_path: str | Path,
                     extractor: "Extractor", as_half: bool = False,
                     progress: bool = True, log: Callable[[str], None] | None = None,
                     record: dict | None = None, executor: Executor | None = None
                     ) -> StageReport:
    """Extract features of `names` (relative to image_dir) into features_path (hloc layout).

    record: `model_record` of the extractor; a file made with another one is refused.
    executor: run the extractor (a registry model) on its workers (matchlab.distributed);
    None: here."""
    report = StageReport("extract")
    start = time.perf_counter()
    image_dir = Path(image_dir)
    with FeatureStore(features_path) as store:
        check_model_record(store, "matchlab_extractor", record, "features",
                           "--features / extractor options")
        todo = [n for n in names if n not in store]
        report.already = len(names) - len(todo)
        if executor is not None:
            from .distributed.executors import worker_spec
            from .distributed.stages import extract_remote

            extract_remote(executor, worker_spec("extractor", extractor), image_dir, todo,
                           store, report, as_half, log, progress)
            report.seconds = time.perf_counter() - start
            return report  # (the store closes on the way out)
        # the next images are decoded and resized while the network runs on this one
        loads = prefetched(todo, lambda name: extractor.prepare(image_dir / name))
        release = FreedMemoryReleaser(every=IMAGES_BETWEEN_TRIMS)
        for name, image in tqdm(loads, desc="extract", unit="img", total=len(todo),
                                disable=not progress):
            try:
                features = extractor(image.result())
            except ImageError as e:
                report.failed[name] = e.reason
                if log is not None:
                    log(f"skipped {name}: {e.reason}")
                continue
            store.write(name, features, as_half=as_half)
            report.done += 1
            release.step()
    report.seconds = time.perf_counter() - start
    return report


class _FeatureCache:
    """Features read from a store, the most recently used kept in memory (pairs share images);
    `reads` counts the reads from disk."""

    def __init__(self, store: FeatureStore, size: int = 64, device=None):
        self.store, self.size, self.items, self.device = store, size, OrderedDict(), device
        self.reads = 0

    def __getitem__(self, name: str) -> Features:
        if name in self.items:
            self.items.move_to_end(name)
        else:
            features = self.store.read(name)
            self.reads += 1
            self.items[name] = features if self.device is None else features.to(self.device)
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        return self.items[name]


def visit_order(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """Indices of `pairs` in the order `match_pairs` matches them: images are visited in
    sorted name order (a sequence's capture order) and each pair is matched when its later
    image is visited, its pairs with earlier images in their name order. With the 64-image
    cache, an image's features are then read once for its sequential and nearby retrieval
    partners; a partner far away in name order (an unrelated retrieved image) costs one
    more read."""
    rank = {name: i for i, name in enumerate(sorted({n for pair in pairs for n in pair}))}
    first = np.fromiter((rank[a] for a, _ in pairs), np.int64, len(pairs))
    second = np.fromiter((rank[b] for _, b in pairs), np.int64, len(pairs))
    later, earlier = np.maximum(first, second), np.minimum(first, second)
    return np.lexsort((np.arange(len(pairs)), earlier, later)).tolist()


def matched_batches(matcher: Matcher, pairs: Sequence[tuple[str, str]], features,
                    batch_size: int, gravity: dict[str, Any] | None = None):
    """(chunk, its Matches) for consecutive chunks of `batch_size` pairs, each one
    `match_batch` call; features: {name: Features} (e.g. a `_FeatureCache`); gravity: {name:
    down direction} for a matcher with a gravity prior (missing names: its default)."""
    step = max(int(batch_size), 1)
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        yield chunk, matcher.match_batch(
            [(features[a], features[b]) for a, b in chunk],
            gravity=[(gravity.get(a), gravity.get(b)) for a, b in chunk] if gravity else None)


def resolve_batch_size(batch_size: int | str, matcher: Matcher,
                       pairs: Sequence[tuple[str, str]], features) -> int:
    """`batch_size` itself, or for "auto" `matcher.batch_size_for` the mean keypoint count
    of the first (at most 32) images of `pairs`, read through `features` ({name: Features})."""
    if check_batch_size(batch_size) != "auto":
        return batch_size
    names = list(dict.fromkeys(n for pair in pairs[:32] for n in pair))[:32]
    if not names:
        return matcher.batch_size_for(0)
    return matcher.batch_size_for(sum(len(features[n]) for n in names) / len(names))


def check_gravity(matcher: Matcher, gravity: dict | None) -> None:
    """ConfigError when per-image gravity is given to a matcher without a gravity prior."""
    if gravity and not matcher.capabilities.uses_gravity:
        raise ConfigError(f"gravity directions apply to matchers with a gravity prior "
                         f"(affineglue), not to {type(matcher).__name__}")


def match_pairs(pairs: Sequence[tuple[str, str]], features_path: str | Path,
                matches_path: str | Path, matcher: Matcher,
                progress: bool = True, batch_size: int | str = "auto", as_half: bool = False,
                device=None, record: dict | None = None,
                gravity: dict[str, Any] | None = None, executor: Executor | None = None
                ) -> StageReport:
    """Match every pair into matches_path; pairs naming an image absent from features_path
    raise KeyError listing them before any work is done.

    gravity: {image name: down direction [3] in camera coordinates} for a matcher that uses
    a gravity prior (`capabilities.uses_gravity`, e.g. AffineGlue); images without an entry
    fall back to the matcher's default (upright). Giving it to another matcher is a ValueError.

    The matcher's `match_batch` gets `batch_size` pairs at a time (its results equal
    pair-by-pair matching); "auto": `matcher.batch_size_for` the mean keypoint count of the
    first images to match (at most 32), e.g. SuperGlue one pair of 2,048 keypoints a call,
    LightGlue four (report.batch_size says which). The same Features object is passed for
    an image that occurs in several pairs of a batch, so a matcher may cache per-image work
    by identity.

    executor: run the matcher (a registry model) on its workers (matchlab.distributed);
    None: here."""
    check_gravity(matcher, gravity)
    report = StageReport("match")
    start = time.perf_counter()
    with FeatureStore(features_path, "r") as features, MatchStore(matches_path) as store:
        check_model_record(store, "matchlab_matcher", record, "matches",
                           "--matcher / matcher options")
        known = set(features.names())
        missing = sorted({n for pair in pairs for n in pair if n not in known})
        if missing:
            raise KeyError(f"{len(missing)} image(s) named in the pairs have no features in "
                           f"{features_path}: {', '.join(map(repr, missing[:10]))}"
                           + (" ..." if len(missing) > 10 else ""))
        digests = check_same_features(features, store, pairs)  # matches of other keypoints
        todo = [p for p in pairs if p not in store]
        report.already = len(pairs) - len(todo)
        todo = [todo[i] for i in visit_order(todo)]  # each image read about once
        cache = _FeatureCache(features, device=device)
        batch_size = report.batch_size = resolve_batch_size(batch_size, matcher, todo, cache)
        if todo and matcher.capabilities.needs_frames and cache[todo[0][0]].lafs is None:
            raise ConfigError(
                f"{type(matcher).__name__} needs local affine frames and {features_path} has none "
                f"(e.g. {todo[0][0]!r}): extract with --extractor-conf lafs=affnet, use SIFT, or "
                "fit the affine correspondences to matched neighbours (--matcher-conf "
                "affines=neighbours)")
        if executor is not None:
            from .distributed.executors import worker_spec
            from .distributed.stages import match_remote

            match_remote(executor, worker_spec("matcher", matcher), todo, features_path,
                         cache, store, report, digests, as_half, batch_size, gravity, progress)
            report.seconds = time.perf_counter() - start
            return report
        release = FreedMemoryReleaser(every=PAIRS_BETWEEN_TRIMS)
        with tqdm(total=len(todo), desc="match", unit="pair", disable=not progress) as bar:
            for chunk, results in matched_batches(matcher, todo, cache, batch_size, gravity):
                for (name0, name1), result in zip(chunk, results):
                    # each pair is durable once written
                    store.write(name0, name1, result.to("cpu"), as_half=as_half,
                                keypoints=(digests[name0], digests[name1]))
                    report.matches += len(result)
                report.done += len(chunk)
                bar.update(len(chunk))
                release.step(len(chunk))
        report.reads = cache.reads
    report.seconds = time.perf_counter() - start
    return report


def read_keypoints_and_matches(features_path: str | Path, matches_path: str | Path,
                               names: Sequence[str], pairs: Sequence[tuple[str, str]]
                               ) -> tuple[KeypointsView, MatchesView]:
    """What `create_database` takes: ({name: keypoints [N, 2]}, {(name0, name1): [M, 2]
    keypoint indices}) as mappings that read the two files one item per access (bounded
    memory at any number of pairs; use them in `with` to keep the files open)."""
    return KeypointsView(features_path, names), MatchesView(matches_path, pairs)


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
    mapper: str = "incremental"  # incremental | global | hierarchical | auto (sfm.pick_mapper)
    resize: int | None = 1024
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS
    camera_model: str = "SIMPLE_RADIAL"
    camera_mode: str = "auto"
    # known intrinsics of camera_model in COLMAP's order (e.g. PINHOLE: fx, fy, cx, cy), in
    # pixels of the original images; the incremental mapper then holds them fixed
    camera_params: list[float] | None = None
    global_descriptor: str = "auto"  # for retrieval pairs
    matcher_conf: dict = field(default_factory=dict)
    extractor_conf: dict = field(default_factory=dict)
    # "name gx gy gz" lines: per-image gravity for matchers with a gravity prior (affineglue)
    gravity_file: str | None = None
    # pycolmap pipeline options (nested, dotted or flat keys; see matchlab.sfm.options),
    # merged over DEFAULT_MAPPER_OPTIONS
    mapper_options: dict = field(default_factory=dict)
    # pycolmap TwoViewGeometryOptions fields over sfm.DEFAULT_VERIFICATION_OPTIONS
    verify_options: dict = field(default_factory=dict)
    # RANSAC trials only where they can pay (sfm.verification.plan_budget); off: COLMAP's
    # verification with verify_options for every pair (measured in docs/usage.md)
    verify_budget: bool = False
    # pairs per matcher call: "auto" (from the keypoint counts, Matcher.batch_size_for) or N
    batch_size: int | str = "auto"


# A fixed seed and one thread make a run repeatable: COLMAP's mapper is random, and with
# several threads it is not repeatable even with a fixed seed (measured on sacre_coeur, SIFT:
# 10/10 images in 6 of 6 single-threaded runs, but 2/10 in 2 of 6 multi-threaded ones).
# Pass mapper option num_threads=-1 for speed on large scenes.
DEFAULT_MAPPER_OPTIONS = {"random_seed": 0, "num_threads": 1}
# When the model holds fewer than this fraction of the images, mapping is retried with
# other seeds (a bad initial pair can strand the mapper on a tiny model), best model kept.
RETRY_BELOW_FRACTION, RETRY_SEEDS = 0.5, (1, 2)


def run_sfm(image_dir: str | Path, output_dir: str | Path, config: SfMConfig | None = None,
            progress: bool = True, log: Callable[[str], None] = print,
            colmap_log: bool = False, device: str | None = None, plots: int = 3,
            report: bool = True, executor: Executor | None = None) -> dict:
    """Image folder -> features.h5, pairs.txt, matches.h5, database.db, sparse model.

    Every stage is resumable; returns (and writes to output_dir/summary.json) the model
    summary plus the stage reports and the images that were skipped and why. device: where
    the networks run (default CPU). plots: match plots of the `plots` pairs with the most
    verified matches go to output_dir/plots; report: write output_dir/report.html.
    executor: where extraction, global descriptors and matching run (matchlab.distributed;
    None: here).
    """
    from .registry import load_extractor, load_matcher
    from .retrieval.pairs import write_pairs_file
    from .retrieval.select import select_pairs
    from .sfm import (create_database, drop_weak_images, export_model, import_verified,
                      model_summary, reconstruct, verify)
    from .sfm.reconstruction import MAPPERS, pick_mapper

    import pycolmap

    if not colmap_log:  # COLMAP's INFO lines drown the progress bars; keep its warnings
        pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 1)
    config = config or SfMConfig()
    image_dir, output_dir = Path(image_dir), Path(output_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    names = list_images(image_dir)
    if not names:
        raise FileNotFoundError(f"no images found in {image_dir}")
    skipped = {n: f"duplicate of {o}" for n, o in find_duplicates(image_dir, names).items()}
    for name, why in list(skipped.items())[:10]:
        log(f"skipped {name}: {why}")
    if len(skipped) > 10:
        log(f"... and {len(skipped) - 10} more duplicates (summary.json lists all)")
    reports = []

    extractor = load_extractor(config.features, **{"resize": config.resize,
                               "max_keypoints": config.max_keypoints, **config.extractor_conf})
    matcher = load_matcher(config.matcher, for_features=config.features,
                           **config.matcher_conf)  # bad options fail early
    gravity = read_gravity(config.gravity_file) if config.gravity_file else None
    check_gravity(matcher, gravity)  # before any work
    if device is not None:
        extractor, matcher = extractor.to(device), matcher.to(device)
    candidates = [n for n in names if n not in skipped]
    reports.append(extract_features(image_dir, candidates, output_dir / "features.h5",
                                    extractor, progress=progress, log=log,
                                    record=model_record(config.features, extractor),
                                    executor=executor))
    skipped.update(reports[-1].failed)
    good = [n for n in names if n not in skipped]
    if len(good) < 2:
        raise ReconstructionError(f"fewer than two readable images in {image_dir}; skipped: {skipped}")

    pairs = select_pairs(config.pairs, good, image_dir=image_dir, output_dir=output_dir,
                         global_descriptor=config.global_descriptor, progress=progress,
                         executor=executor)
    write_pairs_file(output_dir / "pairs.txt", pairs)
    reports.append(match_pairs(pairs, output_dir / "features.h5", output_dir / "matches.h5",
                               matcher, progress=progress, device=device,
                               batch_size=config.batch_size,
                               record=model_record(config.matcher, matcher),
                               gravity=gravity, executor=executor))

    start = time.perf_counter()
    keypoints, pair_matches = read_keypoints_and_matches(output_dir / "features.h5",
                                                         output_dir / "matches.h5", good, pairs)
    with keypoints, pair_matches:
        create_database(output_dir / "database.db", image_dir, good, keypoints, pair_matches,
                        camera_model=config.camera_model, camera_mode=config.camera_mode,
                        camera_params=config.camera_params, progress=progress)
    if matcher.capabilities.verifies_geometry:  # AffineGlue: its matches are inliers
        import_verified(output_dir / "database.db", pairs)
    verify(output_dir / "database.db", pairs, options=config.verify_options,
           budget=config.verify_budget)  # (skips pairs verified above)
    reports.append(StageReport("database", done=len(pairs), seconds=time.perf_counter() - start))

    start = time.perf_counter()
    mapper = pick_mapper(config.mapper, len(good))
    # known intrinsics (SfMConfig.camera_params) stay as given in every bundle adjustment
    fixed = MAPPERS[mapper].fixed_intrinsics if config.camera_params else {}
    options = {**DEFAULT_MAPPER_OPTIONS, **fixed, **config.mapper_options}
    rec = reconstruct(output_dir / "database.db", image_dir, output_dir, mapper=mapper,
                      options=options, image_names=good)
    for seed in RETRY_SEEDS:
        if rec.num_reg_images() >= RETRY_BELOW_FRACTION * len(good):
            break
        log(f"map: only {rec.num_reg_images()} of {len(good)} images registered; "
            f"retrying with random_seed={seed}")
        retry = reconstruct(output_dir / "database.db", image_dir, output_dir / ".retry.tmp",
                            mapper=mapper, options={**options, "random_seed": seed},
                            image_names=good, export=False)
        if retry.num_reg_images() > rec.num_reg_images():
            rec = retry
            export_model(rec, output_dir)
        shutil.rmtree(output_dir / ".retry.tmp", ignore_errors=True)  # matchlab's own name
    dropped = drop_weak_images(rec)
    if dropped:
        export_model(rec, output_dir)
    reports.append(StageReport("map", done=1, seconds=time.perf_counter() - start))
    summary = model_summary(rec, good)
    summary["dropped"] = dropped
    summary["skipped"] = skipped
    summary["config"] = asdict(config)
    summary["image_dir"] = str(image_dir.resolve())  # `localize` draws the model's images
    finish_outputs(output_dir, image_dir, rec, summary, reports, pairs, keypoints, pair_matches,
                   plots, log, report)
    return summary


def finish_outputs(output_dir: Path, image_dir: Path, rec, summary: dict,
                   reports: Sequence[StageReport], pairs, keypoints, pair_matches, plots: int,
                   log: Callable[[str], None], report: bool = True) -> None:
    """The end of a run making a model (`run_sfm`, `sfm.triangulation`): summary.json with
    the stage reports, report.html with `plots` match plots, the stage lines and summary."""
    from .sfm.report import format_summary, write_visual_report

    summary["stages"] = [asdict(r) for r in reports]
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:
        write_visual_report(output_dir, image_dir, rec, summary, pairs, keypoints, pair_matches,
                            plots)
    for stage in reports:
        log(stage.line())
    log(format_summary(summary))
