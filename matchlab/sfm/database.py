"""Plain keypoints and matches -> a COLMAP database (verification: `sfm.verification`).

Inputs are plain numpy data keyed by image name (the path relative to `image_dir`, `/`
separated), so this module does not depend on how features and matches are stored.

Conventions:
- keypoints are given in matchlab's convention: (x, y) pixels of the ORIGINAL image with
  (0, 0) the centre of the top-left pixel. COLMAP puts (0, 0) at the top-left CORNER of
  the top-left pixel, so `create_database` writes ``keypoints + 0.5`` (as hloc does).
- matches for a pair (a, b) are an [M, 2] array of (index into a's keypoints, index into
  b's keypoints). Either order of a pair may be given, not both.

Everything is resumable: images, keypoints and matches already in the database are left
alone (and checked for consistency), and `verify` skips pairs already verified.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ..retrieval.pairs import dedupe_pairs
from ..errors import DatabaseError
from .colmap import pycolmap_module as _pycolmap
from .options import apply_options

logger = logging.getLogger(__name__)

__all__ = ["DatabaseError", "CAMERA_MODES", "create_database", "read_image_ids",
           "import_verified"]

CAMERA_MODES = ("auto", "single", "per_folder", "per_image")
WRITE_CHUNK = 1000  # images / pairs written per database transaction

def read_image_ids(db_path: str | os.PathLike) -> dict[str, int]:
    """{image name: COLMAP image id} of the images in a database."""
    pycolmap = _pycolmap()
    with pycolmap.Database.open(str(db_path)) as db:
        return {im.name: im.image_id for im in db.read_all_images()}


def _camera_mode(mode: Any):
    pycolmap = _pycolmap()
    if isinstance(mode, pycolmap.CameraMode):
        return mode
    if not isinstance(mode, str) or mode.lower() not in CAMERA_MODES:
        raise DatabaseError(f"camera_mode must be one of {CAMERA_MODES}, got {mode!r}")
    return getattr(pycolmap.CameraMode, mode.upper())


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last one shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_names(image_dir: Path, names: Sequence[str], db_path: Path) -> list[str]:
    """The names checked; the files of those not yet in the database must be under
    image_dir (images already in it may live elsewhere: `sfm --extend`)."""
    if isinstance(names, str):
        raise DatabaseError("names must be a list of image names, not a single string")
    names = list(names)
    if not names:
        raise DatabaseError("no image names given")
    if len(set(names)) != len(names):
        counts = Counter(names)
        raise DatabaseError(f"image names repeated in the list: "
                            f"{sorted(n for n, c in counts.items() if c > 1)[:5]}")
    present: set[str] = set()
    if db_path.is_file():  # (opening creates the file: not before the inputs are checked)
        with _pycolmap().Database.open(str(db_path)) as db:
            present = {im.name for im in db.read_all_images()}
    missing_files = [n for n in names if n not in present and not (image_dir / n).is_file()]
    if missing_files:
        raise DatabaseError(f"{len(missing_files)} image(s) not found under {image_dir}: "
                            f"{missing_files[:5]}")
    return names


def _keypoints_of(keypoints: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """One image's keypoints checked, in COLMAP's convention (+0.5) as float32 [N, 2]."""
    try:
        k = np.asarray(keypoints[name])
    except KeyError:
        raise DatabaseError(f"no keypoints given for image {name!r}") from None
    if k.ndim != 2 or k.shape[1] != 2:
        raise DatabaseError(f"keypoints of {name!r} must be [N, 2], got shape {k.shape}")
    if not np.isfinite(k).all():
        raise DatabaseError(f"keypoints of {name!r} contain NaN or infinity")
    return (k.astype(np.float64) + 0.5).astype(np.float32)


def _matches_of(pair: Any, m: Any, index: Mapping[str, int], counts: Sequence[int]
                ) -> tuple[str, str, np.ndarray]:
    """One pair's matches checked: (name0, name1, [M, 2] int64 keypoint indices)."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise DatabaseError(f"match keys must be (name0, name1) tuples, got {pair!r}")
    a, b = pair
    for n in (a, b):
        if n not in index:
            raise DatabaseError(f"matches for pair {pair!r} name {n!r}, which is not in "
                                "the image list")
    if a == b:
        raise DatabaseError(f"self-pair {pair!r} in matches")
    m = np.asarray(m)
    if m.size == 0:
        m = m.reshape(0, 2)
    if m.ndim != 2 or m.shape[1] != 2:
        raise DatabaseError(f"matches of {pair!r} must be [M, 2], got shape {m.shape}")
    if m.size and not (np.issubdtype(m.dtype, np.integer) or np.array_equal(m, np.round(m))):
        raise DatabaseError(f"matches of {pair!r} must be integer indices, got {m.dtype}")
    m = m.astype(np.int64)
    if m.size:
        n0, n1 = counts[index[a]], counts[index[b]]
        if m.min() < 0:
            raise DatabaseError(f"matches of {pair!r} contain negative indices")
        if m[:, 0].max() >= n0 or m[:, 1].max() >= n1:
            raise DatabaseError(
                f"matches of {pair!r} index past the keypoints ({n0} in {a!r}, {n1} in {b!r}; "
                f"largest indices {m[:, 0].max()}, {m[:, 1].max()})")
    return a, b, m


def _stale(db_path: Path, what: str, pair_or_name: Any, stored: int, given: int) -> DatabaseError:
    return DatabaseError(f"{db_path} already holds different {what} for {pair_or_name} "
                         f"({stored} stored, {given} given); it is stale: delete it")


def _cleared_by_verification(db, id0: int, id1: int) -> bool:
    """COLMAP's verification empties the stored matches of a pair with fewer than its
    min_num_matches (15) and records it as verified without inliers: such a pair counts as
    imported already."""
    return (db.exists_two_view_geometry(id0, id1)
            and len(db.read_two_view_geometry(id0, id1).inlier_matches) == 0)


def _check_all(db_path: Path, names: list[str], keypoints: Mapping[str, np.ndarray],
               matches: Mapping[tuple[str, str], np.ndarray], progress: bool) -> list[int]:
    """The first pass: every input checked, and compared with what the database (if any)
    already holds, one image / pair at a time. Returns the keypoint count per name."""
    pycolmap = _pycolmap()
    existing: dict[str, int] = {}
    db = pycolmap.Database.open(str(db_path)) if db_path.is_file() else None
    try:
        if db is not None:
            existing = {im.name: im.image_id for im in db.read_all_images()}
        counts = []
        for name in tqdm(names, desc="database: check keypoints", unit="img",
                         disable=not progress):
            k = _keypoints_of(keypoints, name)
            counts.append(len(k))
            if name in existing and db.exists_keypoints(existing[name]):
                old = db.read_keypoints(existing[name])[:, :2]
                if old.shape != k.shape or not np.allclose(old, k, atol=1e-3):
                    raise _stale(db_path, "keypoints", repr(name), len(old), len(k))
        index = {n: i for i, n in enumerate(names)}
        seen: set[int] = set()  # one int per pair: either order given once
        for pair, m in tqdm(matches.items(), total=len(matches), desc="database: check matches",
                            unit="pair", disable=not progress):
            a, b, m = _matches_of(pair, m, index, counts)
            i, j = sorted((index[a], index[b]))
            key = i * len(names) + j
            if key in seen:
                raise DatabaseError(f"matches given for both ({a!r}, {b!r}) and ({b!r}, "
                                    f"{a!r}); give one order only")
            seen.add(key)
            if a in existing and b in existing and db.exists_matches(existing[a], existing[b]):
                old = db.read_matches(existing[a], existing[b]).astype(np.int64)
                # a set of index pairs: a pair matched in the other order lists them otherwise
                if old.shape != m.shape or not np.array_equal(np.unique(old, axis=0),
                                                              np.unique(m, axis=0)):
                    if not (len(old) == 0 and _cleared_by_verification(db, existing[a],
                                                                       existing[b])):
                        raise _stale(db_path, "matches", f"({a!r}, {b!r})", len(old), len(m))
        return counts
    finally:
        if db is not None:
            db.close()


def create_database(db_path: str | os.PathLike, image_dir: str | os.PathLike,
                    names: Sequence[str], keypoints: Mapping[str, np.ndarray],
                    matches: Mapping[tuple[str, str], np.ndarray],
                    camera_model: str = "SIMPLE_RADIAL", camera_mode: str = "auto",
                    camera_params: Sequence[float] | None = None,
                    image_options: Mapping[str, Any] | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Create (or complete) a COLMAP database from plain keypoints and matches.

    db_path:       the .db file; created if missing, completed if it exists.
    image_dir:     root folder of the images to import; `names` are paths relative to it
                   (images already in the database need no file there).
    keypoints:     {name: [N, 2] float} in matchlab's pixel-centre convention (module doc);
                   any mapping, e.g. `matchlab.store.KeypointsView` reading features.h5.
    matches:       {(name0, name1): [M, 2] int} keypoint indices; pairs with zero matches
                   are recorded too (so a re-run knows they were tried). Any mapping whose
                   `items()` can be iterated twice, e.g. `matchlab.store.MatchesView`
                   reading matches.h5: memory stays bounded by one pair's matches.
    camera_model:  a COLMAP camera model name (SIMPLE_RADIAL, PINHOLE, OPENCV, ...).
    camera_mode:   "auto" (COLMAP: a camera per distinct size/EXIF focal; without EXIF
                   that is one camera per image), "single", "per_folder" or "per_image".
    camera_params: known intrinsics for `camera_model` (e.g. [f, cx, cy, k]); by default
                   COLMAP's prior: EXIF focal length, else 1.2 * max(width, height).
    image_options: further `pycolmap.ImageReaderOptions` fields (e.g. mask_path).
    progress:      progress bars for the two passes over the inputs.

    Two passes, one image / pair at a time: the first checks every input (and compares it
    with what the database already holds) before anything is written; the second writes
    what is missing, committed every WRITE_CHUNK pairs (an interrupted import resumes).
    Images are imported with `pycolmap.import_images`, which reads image sizes and EXIF
    (focal length; GPS becomes pose priors). Images, keypoints and matches already in the
    database are skipped; existing keypoints must equal the given ones and existing
    matches the given matches (else `DatabaseError`: the database is stale; delete it).
    Returns counts: images/keypoints/matches added and already present, and image_ids.
    """
    pycolmap = _pycolmap()
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatabaseError(f"image folder not found: {image_dir}")
    db_path = Path(db_path)
    names = _check_names(image_dir, names, db_path)
    mode = _camera_mode(camera_mode)
    if camera_params is not None:
        expected = pycolmap.Camera(model=camera_model, width=1, height=1).params_info
        if len(camera_params) != len(expected.split(",")):
            raise DatabaseError(f"camera_params: {camera_model} takes {expected}, "
                                f"got {len(camera_params)} values")
    db_path = Path(db_path)
    counts = _check_all(db_path, names, keypoints, matches, progress)
    db_path.parent.mkdir(parents=True, exist_ok=True)

    with pycolmap.Database.open(str(db_path)) as db:
        existing = {im.name: im for im in db.read_all_images()}
    to_import = [n for n in names if n not in existing]
    if to_import:
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = camera_model
        if camera_params is not None:
            reader.camera_params = ",".join(repr(float(v)) for v in camera_params)
        apply_options(reader, image_options)
        # A "single" camera must stay single when a database is completed in two runs.
        present_cams = {existing[n].camera_id for n in names if n in existing}
        if mode == pycolmap.CameraMode.SINGLE and len(present_cams) == 1:
            reader.existing_camera_id = present_cams.pop()
        # NB: image_names=[] would import EVERY image in image_dir; to_import is non-empty.
        pycolmap.import_images(str(db_path), str(image_dir), mode, image_names=to_import,
                               options=reader)
    ids = read_image_ids(db_path)
    failed = [n for n in to_import if n not in ids]
    if failed:  # import_images only logs unreadable files
        raise DatabaseError(f"COLMAP could not import {len(failed)} image(s) (unreadable or "
                            f"unsupported): {failed[:5]}")

    added = {"keypoints": 0, "matches": 0}
    index = {n: i for i, n in enumerate(names)}
    checked = (_matches_of(p, m, index, counts) for p, m in matches.items())
    with pycolmap.Database.open(str(db_path)) as db:
        with tqdm(total=len(names), desc="database: write keypoints", unit="img",
                  disable=not progress) as bar:
            for chunk in _chunks(names, WRITE_CHUNK):
                with pycolmap.DatabaseTransaction(db):
                    for name in chunk:
                        if not db.exists_keypoints(ids[name]):
                            db.write_keypoints(ids[name], _keypoints_of(keypoints, name))
                            added["keypoints"] += 1
                bar.update(len(chunk))
        with tqdm(total=len(matches), desc="database: write matches", unit="pair",
                  disable=not progress) as bar:
            for chunk in _chunks(checked, WRITE_CHUNK):
                with pycolmap.DatabaseTransaction(db):
                    for a, b, m in chunk:
                        if not db.exists_matches(ids[a], ids[b]):
                            db.write_matches(ids[a], ids[b], m.astype(np.uint32))
                            added["matches"] += 1
                bar.update(len(chunk))
    stats = {"images_added": len(to_import), "images_existing": len(names) - len(to_import),
             "keypoints_added": added["keypoints"],
             "keypoints_existing": len(names) - added["keypoints"],
             "matches_added": added["matches"],
             "matches_existing": len(matches) - added["matches"]}
    logger.info("%s: %d images added (%d present), %d keypoint sets added, %d pairs of "
                "matches added (%d present)", db_path, stats["images_added"],
                stats["images_existing"], stats["keypoints_added"], stats["matches_added"],
                stats["matches_existing"])
    stats["image_ids"] = {n: ids[n] for n in names}
    return stats


def import_verified(db_path: str | os.PathLike, pairs: Iterable[Sequence[str]],
                    configuration: str = "UNCALIBRATED") -> int:
    """Write every matched pair's matches as its verified two-view geometry (inlier matches,
    the given `pycolmap.TwoViewGeometryConfiguration` name), for matchers that verify their
    matches themselves (AffineGlue). Pairs already verified or without matches are left
    alone, so a later `verify` skips these pairs. The configuration is always set: pycolmap's
    default UNDEFINED breaks mapping (formats-and-pycolmap.md). Returns the pairs written."""
    pycolmap = _pycolmap()
    config = getattr(pycolmap.TwoViewGeometryConfiguration, configuration)
    ids = read_image_ids(db_path)
    written = 0
    with pycolmap.Database.open(str(db_path)) as db, pycolmap.DatabaseTransaction(db):
        for a, b in dedupe_pairs(pairs):
            id0, id1 = ids[a], ids[b]
            if not db.exists_matches(id0, id1) or db.exists_two_view_geometry(id0, id1):
                continue
            matches = db.read_matches(id0, id1)
            if len(matches) == 0:
                continue
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = config
            geometry.inlier_matches = matches
            db.write_two_view_geometry(id0, id1, geometry)
            written += 1
    return written
