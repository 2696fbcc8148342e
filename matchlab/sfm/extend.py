"""Adding new images to a model made by `matchlab sfm`, without redoing the old ones
(`matchlab sfm --extend SFM_DIR NEW_IMAGES`, `extend_sfm`).

The model folder's own records say how it was made: the extractor (features.h5), the matcher
(matches.h5), the global descriptor (global.h5) and the other options (summary.json's
config). The new images of NEW_IMAGES (names relative to it) are

1. extracted into SFM_DIR/features.h5 (the old images' features are not touched);
2. paired with the model's images and with each other (`extension_pairs`: the model's pairs
   spec, or another one, keeping only pairs that involve a new image);
3. matched into SFM_DIR/matches.h5 (old pairs are not rematched), added to SFM_DIR/pairs.txt;
4. imported into SFM_DIR/database.db (new images, their keypoints and the new pairs'
   matches; only the new pairs are verified);
5. registered by pycolmap's incremental mapper started from the existing model: new images
   are registered and triangulated, local and global bundle adjustment refine the old poses
   but the old images are never re-registered (`--mapper-options fix_existing_frames=true`
   holds them fixed). The result is moved back into the old model's frame (a similarity
   over the old images' centres), so coordinates in the old frame stay valid.

The model is replaced only at the end: the new one is written to a temporary folder, the old
one is kept as SFM_DIR/sparse_before_extend/ (the model before the last extension), then
sparse/, sparse_text/ and points3D.ply are replaced (each written under a temporary name and
moved into place) and summary.json and report.html are rewritten. SFM_DIR/.extend.json
records the extension in progress: a killed run is resumed by the same command (features,
matches and database entries already made are kept; the mapping restarts from the model
before the extension), and another extension is refused until it finishes.

Names: a NEW_IMAGES name already registered in the model is skipped ("already in the
model"); a name SFM_DIR knows from another image (one of the model's unregistered or
unreadable images, or an earlier extension's) is skipped too, with the advice to rename the
file. A bad new image (unreadable, duplicate) is skipped and named; so is a new image the
mapper cannot register, or registers on too few points (`drop_weak_images`).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, ReconstructionError, UsageError
from ..retrieval.pairs import Pair, dedupe_pairs, parse_pairs_spec, read_pairs_file

__all__ = ["extend_sfm", "extension_pairs", "model_config", "check_options", "BACKUP"]

PENDING, BACKUP, WORK = ".extend.json", "sparse_before_extend", ".extend.tmp"
# options of `matchlab sfm` that decide the model's contents: an extension takes them from
# the model's records; a different value given with --extend is an error
MODEL_OPTIONS = ("features", "matcher", "resize", "max_keypoints", "extractor_conf",
                 "matcher_conf", "camera_model", "camera_mode", "global_descriptor")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def model_config(sfm_dir: str | os.PathLike):
    """(SfMConfig, summary) of the `matchlab sfm` output folder sfm_dir, from its
    summary.json; a UsageError naming what is missing when sfm_dir is not one."""
    from ..pipeline import SfMConfig

    sfm_dir = Path(sfm_dir)
    interrupted = (sfm_dir / PENDING).is_file()  # sparse/ may be missing: see _read_pending
    for needed in ("summary.json", "features.h5", "matches.h5", "database.db", "sparse"):
        if not (sfm_dir / needed).exists() and not (interrupted and needed == "sparse"):
            raise UsageError(f"{sfm_dir} is not a finished `matchlab sfm` output folder: "
                             f"no {needed}")
    try:
        summary = json.loads((sfm_dir / "summary.json").read_text())
        stored = summary["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{sfm_dir / 'summary.json'} is not a `matchlab sfm` summary") from None
    known = {f.name for f in fields(SfMConfig)}
    return SfMConfig(**{k: v for k, v in stored.items() if k in known}), summary


def check_options(config, given: Mapping[str, Any]) -> None:
    """ConfigError when an option given with --extend (`given`: {SfMConfig field: value})
    differs from the model's: the new images must be described and matched as the old."""
    if given.get("mapper", "incremental") != "incremental":
        raise ConfigError(f"--extend always uses the incremental mapper (it continues the "
                          f"model); drop --mapper {given['mapper']}")
    for key, value in given.items():
        if key in MODEL_OPTIONS and getattr(config, key) != value:
            option = "--" + key.replace("_", "-").replace("global-descriptor", "global")
            raise ConfigError(f"the model was made with {option} {getattr(config, key)!r}; "
                              f"--extend takes the model's options, and {option} {value!r} "
                              f"would mix incompatible features or matches: drop {option}")


# ----------------------------------------------------------------------------- pairs

def _global_method(sfm_dir: Path, fallback: str) -> str:
    """The method the model's global.h5 was made with (so its descriptors are completed,
    not recomputed), else `fallback` (the model's --global)."""
    from ..retrieval.select import GLOBAL_RECORD
    from ..store import GlobalStore

    path = sfm_dir / "global.h5"
    if not path.is_file():
        return fallback
    with GlobalStore(path, "r") as store:
        text = store.file.attrs.get(GLOBAL_RECORD)
    return json.loads(text)["method"] if text else fallback


def extension_pairs(spec: str, old: Sequence[str], new: Sequence[str], *, sfm_dir: Path,
                    new_dir: Path, old_dir: Path | None, global_descriptor: str = "auto",
                    progress: bool = True, log: Callable[[str], None] | None = None
                    ) -> list[Pair]:
    """The pairs of `spec` over old + new images that involve a new image: exhaustive is
    new x (old + new); sequential:N runs over the sorted union; retrieval:K pairs each new
    image with its K most similar images (old or new) by the model's global descriptor
    (completed in sfm_dir/global.h5; old images missing there are described from old_dir);
    a pairs file may name any image of the model. Names are relative paths, as in the
    stores."""
    from ..retrieval.pairs import sequential_pairs
    from ..retrieval.select import (compute_global_descriptors, read_global_descriptors,
                                    retrieval_pairs)

    old, new = list(old), list(new)
    fresh, pairs = set(new), []
    for kind, arg in parse_pairs_spec(spec):
        if kind == "exhaustive":
            pairs += [(a, b) for i, a in enumerate(new) for b in old + new[i + 1:]]
        elif kind == "sequential":
            pairs += [p for p in sequential_pairs(sorted(old + new), int(arg))
                      if p[0] in fresh or p[1] in fresh]
        elif kind == "file":
            listed = dedupe_pairs(read_pairs_file(arg))
            pairs += [p for p in listed if (p[0] in fresh or p[1] in fresh)
                      and p[0] in fresh | set(old) and p[1] in fresh | set(old)]
        else:  # retrieval
            method = _global_method(sfm_dir, global_descriptor)
            output, features = sfm_dir / "global.h5", sfm_dir / "features.h5"
            for names, folder in ((old, old_dir), (new, new_dir)):
                compute_global_descriptors(names, image_dir=folder or new_dir, output=output,
                                           method=method, features=features,
                                           progress=progress, log=log)
            names, descriptors = read_global_descriptors(output, old + new)
            pairs += retrieval_pairs(names, descriptors, int(arg), query_list=new)
    return dedupe_pairs(pairs)


# ----------------------------------------------------------------------------- state

def _read_pending(sfm_dir: Path, new_dir: Path) -> dict | None:
    """The record of an interrupted extension by the same folder (None when there is none);
    a UsageError when another extension was interrupted."""
    path = sfm_dir / PENDING
    if not path.is_file():
        return None
    try:
        pending = json.loads(path.read_text())
        folder = pending["image_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{path} (the record of an interrupted extension) is unreadable; "
                         f"restore sparse/ from {BACKUP}/ if it exists, then delete it") from None
    if Path(folder) != new_dir.resolve():
        raise UsageError(f"an extension of {sfm_dir} by {folder} was interrupted; finish it "
                         f"first: matchlab sfm --extend {sfm_dir} {folder}")
    return pending


def _known_names(sfm_dir: Path) -> set[str]:
    """Every image name SFM_DIR holds something of (features or a database entry)."""
    from ..store import FeatureStore
    from .database import read_image_ids

    with FeatureStore(sfm_dir / "features.h5", "r") as store:
        names = set(store.names())
    return names | set(read_image_ids(sfm_dir / "database.db"))


def _select_new(names: Sequence[str], registered: set[str], known: set[str],
                resumable: set[str]) -> tuple[list[str], dict[str, str]]:
    """(the images to add, {name: why skipped}) among the NEW_IMAGES names."""
    new, skipped = [], {}
    for name in names:
        if name in registered:
            skipped[name] = "already in the model"
        elif name in known and name not in resumable:
            skipped[name] = ("the model folder already holds another image of this name "
                             "(not registered); rename the file to add it")
        else:
            new.append(name)
    return new, skipped


# ----------------------------------------------------------------------------- mapping

def _continue_mapping(db_path: Path, new_dir: Path, base: Path, work: Path,
                      names: Sequence[str], options: Mapping[str, Any]):
    """pycolmap's incremental mapper started from the model in `base`, over `names`; the
    continued model (the only one: no new sub-models are started)."""
    import pycolmap

    from .reconstruction import _pipeline_options

    opts = _pipeline_options("incremental", options)
    opts.image_names = list(names)
    opts.multiple_models = False
    opts.extract_colors = False  # the images live in several folders: `_colour`
    shutil.rmtree(work, ignore_errors=True)  # left by a killed run (matchlab's own name)
    work.mkdir()
    try:
        recs = pycolmap.incremental_mapping(str(db_path), str(new_dir), str(work),
                                            options=opts, input_path=str(base))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not recs:
        raise ReconstructionError(f"the incremental mapper returned no model when continuing "
                                  f"{base}")
    return max(recs.values(), key=lambda r: r.num_reg_images())


def _into_old_frame(rec, old_model) -> float | None:
    """Move `rec` (in place) by the similarity that best maps its centres of the old model's
    images onto the old ones (COLMAP re-normalizes a model after global bundle adjustment,
    so the continued model comes out in another frame); returns the largest distance left
    between an old image's centre before and after, in the old model's units (None with
    fewer than 3 old images: no similarity is defined)."""
    import numpy as np
    import pycolmap

    from ..geometry.similarity import umeyama
    from .reconstruction import camera_centres

    before, after = camera_centres(old_model), camera_centres(rec)
    common = [n for n in before if n in after]
    if len(common) < 3:
        return None
    src = np.stack([after[n] for n in common])
    dst = np.stack([before[n] for n in common])
    sim = umeyama(src, dst, with_scale=True)
    rec.transform(pycolmap.Sim3d(np.hstack([sim.scale * sim.rotation,
                                            sim.translation.reshape(3, 1)])))
    moved = np.stack([camera_centres(rec)[n] for n in common]) - dst
    return float(np.linalg.norm(moved, axis=1).max())


def _colour(rec, folders: Sequence[tuple[Path | None, set[str]]]) -> None:
    """Colours of the points that have none (black), from the images that see them, each
    looked for in its folder (the new images first; an image that cannot be read is passed
    over). Only images that see a black point are read."""
    for folder, names in folders:
        if folder is None or not folder.is_dir():
            continue
        seeing = {el.image_id for point in rec.points3D.values() if not point.color.any()
                  for el in point.track.elements}
        for image_id in sorted(seeing):
            if rec.images[image_id].name in names:
                rec.extract_colors_for_image(image_id, str(folder))


# ----------------------------------------------------------------------------- entry point

def extend_sfm(sfm_dir: str | os.PathLike, new_dir: str | os.PathLike, *,
               pairs: str | None = None, given: Mapping[str, Any] | None = None,
               mapper_options: Mapping[str, Any] | None = None,
               gravity_file: str | None = None, device=None, progress: bool = True,
               log: Callable[[str], None] = print, plots: int = 3,
               report: bool = True, colmap_log: bool = False) -> dict:
    """Add the images of new_dir to the model in sfm_dir (module docstring); returns the
    updated summary (also written to sfm_dir/summary.json), whose "extensions" list gets
    one entry: the folder, the images added, registered, skipped (why), the stages, the
    seconds, the old images the mapper dropped (none expected) and the largest move of an
    old camera centre (model units, after `_into_old_frame`).

    pairs:          a pairs spec for the new images (default: the model's own).
    given:          {SfMConfig field: value} the user set; must equal the model's
                    (`check_options`).
    mapper_options: pycolmap pipeline options over the model's.
    """
    from ..images import list_images
    from ..io.gravity import read_gravity
    from ..pipeline import (DEFAULT_MAPPER_OPTIONS, StageReport, check_gravity,
                            extract_features, find_duplicates, match_pairs, model_record,
                            read_keypoints_and_matches)
    from ..retrieval.pairs import write_pairs_file
    from .database import create_database, import_verified
    from .verification import verify
    from .localization import load_model_networks
    from .reconstruction import drop_weak_images, export_model, model_summary, read_model
    from .outputs import replace_output
    from .report import format_summary, write_visual_report

    import pycolmap

    if not colmap_log:  # as in run_sfm: COLMAP's INFO lines drown the progress bars
        pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 1)
    started = time.perf_counter()
    sfm_dir, new_dir = Path(sfm_dir), Path(new_dir)
    config, summary = model_config(sfm_dir)
    check_options(config, given or {})
    if not new_dir.is_dir():
        raise UsageError(f"folder of new images not found: {new_dir}")
    pending = _read_pending(sfm_dir, new_dir)
    base = sfm_dir / (pending["base"] if pending else "sparse")
    model = read_model(base)
    registered = {model.images[i].name for i in model.reg_image_ids()}
    names = list_images(new_dir)
    new, skipped = _select_new(names, registered, _known_names(sfm_dir),
                               set(pending["images"]) if pending else set())
    for name, why in find_duplicates(new_dir, new).items():
        skipped[name] = f"duplicate of {why}"
    new = [n for n in new if n not in skipped]
    for name, why in skipped.items():
        log(f"skipped {name}: {why}")
    if not new:
        log(f"extend: nothing to add from {new_dir}")
        return summary
    if pending is None:
        pending = {"image_dir": str(new_dir.resolve()), "images": new, "base": "sparse"}
        _write_json(sfm_dir / PENDING, pending)
    extractor, ext_record, matcher, match_record = load_model_networks(
        sfm_dir, None, None, None, None)
    gravity = read_gravity(gravity_file) if gravity_file else None
    check_gravity(matcher, gravity)
    if device is not None:
        extractor, matcher = extractor.to(device), matcher.to(device)
    features, matches = sfm_dir / "features.h5", sfm_dir / "matches.h5"
    stages = [extract_features(new_dir, new, features, extractor, progress=progress, log=log,
                               record=ext_record)]
    skipped.update(stages[-1].failed)
    new = [n for n in new if n not in skipped]
    if not new:
        (sfm_dir / PENDING).unlink()
        log(f"extend: no readable new image in {new_dir}; the model is unchanged")
        return summary
    old = sorted(registered)
    old_dir = Path(summary["image_dir"]) if summary.get("image_dir") else None
    spec = pairs or config.pairs
    if spec.startswith("file:") and pairs is None:  # the model's own file lists old pairs
        spec = "exhaustive"
    new_pairs = extension_pairs(spec, old, new, sfm_dir=sfm_dir, new_dir=new_dir,
                                old_dir=old_dir, global_descriptor=config.global_descriptor,
                                progress=progress, log=log)
    stages.append(match_pairs(new_pairs, features, matches, matcher, progress=progress,
                              device=device, record=match_record, gravity=gravity))
    before = read_pairs_file(sfm_dir / "pairs.txt") if (sfm_dir / "pairs.txt").is_file() else []
    write_pairs_file(sfm_dir / "pairs.txt", dedupe_pairs(before + new_pairs))

    start = time.perf_counter()
    involved = [n for n in dict.fromkeys(n for p in new_pairs for n in p)]
    keypoints, pair_matches = read_keypoints_and_matches(features, matches, involved,
                                                         new_pairs)
    stages.append(StageReport("database"))
    if new_pairs:
        create_database(sfm_dir / "database.db", new_dir, involved, keypoints, pair_matches,
                        camera_model=config.camera_model, camera_mode=config.camera_mode)
        if matcher.capabilities.verifies_geometry:
            import_verified(sfm_dir / "database.db", new_pairs)
        verified = verify(sfm_dir / "database.db", new_pairs)
        stages[-1].done = verified["pairs_verified"]
        stages[-1].already = verified["pairs_already_verified"]
    stages[-1].seconds = time.perf_counter() - start

    start = time.perf_counter()
    options = {**DEFAULT_MAPPER_OPTIONS, **config.mapper_options, **(mapper_options or {})}
    rec = _continue_mapping(sfm_dir / "database.db", new_dir, base, sfm_dir / WORK,
                            old + new, options) if new_pairs else model
    moved = _into_old_frame(rec, model)
    dropped = drop_weak_images(rec, candidates=new)
    _colour(rec, [(new_dir, set(new)), (old_dir, registered)])
    stages.append(StageReport("map", done=1, seconds=time.perf_counter() - start))
    now = {rec.images[i].name for i in rec.reg_image_ids()}
    lost = sorted(registered - now)
    if lost:
        log(f"extend: the mapper deregistered {len(lost)} old image(s): {', '.join(lost)}")

    if pending["base"] == "sparse":  # keep the model before the extension, then swap
        replace_output(sfm_dir, BACKUP, lambda tmp: shutil.copytree(sfm_dir / "sparse", tmp))
        pending["base"] = BACKUP
        _write_json(sfm_dir / PENDING, pending)
    export_model(rec, sfm_dir)
    inputs = list(dict.fromkeys(summary["registered"] + summary["unregistered"]
                                + [n for n in pending["images"] if n in new]))
    updated = model_summary(rec, inputs)
    extension = {"image_dir": pending["image_dir"], "images": new,
                 "registered": sorted(now & set(new)), "skipped": skipped,
                 "dropped": dropped, "old_images_lost": lost, "old_centres_moved": moved,
                 "stages": [asdict(s) for s in stages],
                 "seconds": round(time.perf_counter() - started, 3)}
    keep = ("config", "image_dir", "stages", "extensions")
    updated.update({k: summary[k] for k in keep if k in summary})
    updated["skipped"] = {**summary.get("skipped", {}), **{
        n: why for n, why in skipped.items() if n not in registered}}
    updated["dropped"] = {**summary.get("dropped", {}), **dropped}
    updated["extensions"] = updated.get("extensions", []) + [extension]
    _write_json(sfm_dir / "summary.json", updated)
    if report:
        fresh = [p for p in new_pairs if p[0] in set(new) and p[1] in set(new)]
        write_visual_report(sfm_dir, new_dir, rec, updated, fresh, keypoints,
                            {p: pair_matches[p] for p in fresh}, plots)
    (sfm_dir / PENDING).unlink()
    for stage in stages:
        log(stage.line())
    log(f"extend: {len(extension['registered'])} of {len(new)} new images registered; "
        f"the previous model is in {sfm_dir / BACKUP}")
    log(format_summary(updated))
    return updated
