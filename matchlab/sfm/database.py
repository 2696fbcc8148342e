"""Plain keypoints and matches -> a COLMAP database, and geometric verification.

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

import copy
import logging
import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ..retrieval.pairs import dedupe_pairs, read_pairs_file
from ..errors import DatabaseError
from .colmap import pycolmap_module as _pycolmap
from .options import apply_options

logger = logging.getLogger(__name__)

__all__ = ["DatabaseError", "CAMERA_MODES", "create_database", "verify", "read_image_ids",
           "import_verified", "verified_inliers", "plan_budget",
           "DEFAULT_VERIFICATION_OPTIONS"]

CAMERA_MODES = ("auto", "single", "per_folder", "per_image")
WRITE_CHUNK = 1000  # images / pairs written per database transaction

# hloc's choice for learned matches (many outliers): more RANSAC trials, lower inlier ratio;
# and a fixed seed (COLMAP's default -1 seeds from the clock, so reruns differed).
DEFAULT_VERIFICATION_OPTIONS: dict[str, Any] = {
    "ransac": {"max_num_trials": 20000, "min_inlier_ratio": 0.1, "random_seed": 0},
}


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


def _two_view_options(options: Any):
    pycolmap = _pycolmap()
    if isinstance(options, pycolmap.TwoViewGeometryOptions):
        return options
    opts = pycolmap.TwoViewGeometryOptions()
    apply_options(opts, DEFAULT_VERIFICATION_OPTIONS)
    apply_options(opts, options)
    return opts


# Trial budget: pairs with M matches are grouped so that a group's floor on the inlier
# ratio is min_num_inliers / (the group's largest M), the groups' M growing by this factor.
BUDGET_GROUP_FACTOR = 1.25


def plan_budget(num_matches: Mapping[int, int], options: Any
                ) -> tuple[list[int], dict[float, list[int]]]:
    """Split pairs by what RANSAC could find in them: (pairs with fewer matches than
    options.min_num_inliers, which cannot verify and are not sent to RANSAC,
    {min_inlier_ratio: pairs} for the rest).

    num_matches: {pair id: number of matches M}. A pair that verifies has at least
    min_num_inliers inliers, so its inlier ratio is at least min_num_inliers / M; COLMAP's
    RANSAC caps its trials at what finds an outlier-free sample with `ransac.confidence`
    when the inlier ratio is `ransac.min_inlier_ratio`, so raising that ratio to
    min_num_inliers / M loses no pair that could verify (at the same confidence) and stops
    the pairs with few matches from running to `ransac.max_num_trials`. Pairs are grouped by
    M (factor BUDGET_GROUP_FACTOR) and each group gets the floor of its largest M; pairs
    whose floor is below the given ratio keep it.
    """
    min_inliers = max(int(options.min_num_inliers), 1)
    base = float(options.ransac.min_inlier_ratio)
    skipped: list[int] = []
    groups: dict[float, list[int]] = {}
    for pair, m in num_matches.items():
        if m < min_inliers:
            skipped.append(pair)
            continue
        level = int(math.floor(math.log(m / min_inliers) / math.log(BUDGET_GROUP_FACTOR)))
        largest = min_inliers * BUDGET_GROUP_FACTOR ** (level + 1)
        ratio = max(base, round(min_inliers / largest, 4))
        groups.setdefault(ratio, []).append(pair)
    return skipped, groups


def verify(db_path: str | os.PathLike,
           pairs: str | os.PathLike | Iterable[Sequence[str]] | None = None,
           options: Mapping[str, Any] | Any = None, num_threads: int = -1,
           budget: bool = False) -> dict[str, Any]:
    """Geometric verification (RANSAC on E / F / H) of matched pairs, through pycolmap.

    pairs:   None verifies every matched pair in the database; otherwise a pairs file
             (matchlab/hloc format, see matchlab.retrieval.pairs) or a list of name pairs.
             Every requested pair must have matches in the database.
    options: `pycolmap.TwoViewGeometryOptions` fields (nested / dotted / flat keys, see
             matchlab.sfm.options) over hloc's defaults DEFAULT_VERIFICATION_OPTIONS
             (ransac.max_num_trials=20000, ransac.min_inlier_ratio=0.1,
             ransac.random_seed=0), or an options object used as is.
    budget:  spend RANSAC trials only where they can pay (`plan_budget`): pairs with fewer
             matches than min_num_inliers get a DEGENERATE geometry without RANSAC, and a
             pair with M matches runs at most the trials needed for an inlier ratio of
             min_num_inliers / M. Off by default: it changed no inlier on the sample
             scenes but saved no time either (docs/usage.md); False: every pair gets
             `options` as they are, in one COLMAP call.
    num_threads: threads of pycolmap.geometric_verification (-1: all), used when names
             contain spaces (COLMAP's pairs files cannot hold them; the budget then only
             skips the pairs with too few matches); otherwise pycolmap.verify_matches runs
             on temporary COLMAP pairs files, one per budget group.

    Pairs that already have a two-view geometry are skipped (resumable); pairs stored with
    zero matches are not verified. COLMAP writes a geometry for each verified pair with its
    configuration set (CALIBRATED, UNCALIBRATED, PLANAR...; a failed pair gets DEGENERATE
    and no inliers), so the UNDEFINED trap of hand-written geometries does not arise.
    Returns counts over the requested pairs: requested, without matches, already
    verified, newly verified, skipped for too few matches (in the newly verified), pairs
    with inliers, and inlier matches.
    """
    pycolmap = _pycolmap()
    db_path = str(db_path)
    if not Path(db_path).is_file():
        raise DatabaseError(f"database not found: {db_path}")
    opts = _two_view_options(options)
    ids = read_image_ids(db_path)
    names = {i: n for n, i in ids.items()}

    def to_pair(pair_id: int) -> tuple[int, int]:
        id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
        return int(id0), int(id1)

    with pycolmap.Database.open(db_path) as db:
        # read_num_matches leaves out pairs with zero matches: those need no RANSAC.
        num_matches = {int(p): int(m) for p, m in zip(*db.read_num_matches()) if m > 0}
        matched = set(num_matches)
        if pairs is None:
            requested = set(matched)
            empty = 0
        else:
            if isinstance(pairs, (str, os.PathLike)):
                pairs = read_pairs_file(pairs)
            pair_list = dedupe_pairs(pairs)
            unknown = sorted({n for p in pair_list for n in p if n not in ids})
            if unknown:
                raise DatabaseError(f"{len(unknown)} image(s) in the pairs are not in the "
                                    f"database: {unknown[:5]}")
            no_matches = [p for p in pair_list if not db.exists_matches(ids[p[0]], ids[p[1]])]
            if no_matches:
                raise DatabaseError(f"{len(no_matches)} pair(s) have no matches in the "
                                    f"database (import them with create_database first): "
                                    f"{no_matches[:5]}")
            by_id = {int(pycolmap.image_pair_to_pair_id(ids[a], ids[b])) for a, b in pair_list}
            requested = by_id & matched
            empty = len(by_id) - len(requested)
        unverified = {p for p in matched if not db.exists_two_view_geometry(*to_pair(p))}
    pending = requested & unverified
    if budget:
        skipped, groups = plan_budget({p: num_matches[p] for p in pending}, opts)
    else:
        skipped, groups = [], {float(opts.ransac.min_inlier_ratio): sorted(pending)}
    stats: dict[str, Any] = {
        "pairs_requested": len(requested) + empty, "pairs_without_matches": empty,
        "pairs_already_verified": len(requested - pending), "pairs_verified": len(pending),
        "pairs_too_few_matches": len(skipped)}
    if skipped:
        _write_degenerate(db_path, [to_pair(p) for p in skipped])
    pending_names = [(names[a], names[b]) for p in pending for a, b in [to_pair(p)]]
    # COLMAP's pairs-file reader splits on spaces and only logs names it cannot find.
    if any(c.isspace() for p in pending_names for n in p for c in n):
        _verify_all(db_path, set(pending) - set(skipped), unverified - requested, opts,
                    num_threads)
    else:
        for ratio, group in sorted(groups.items()):
            group_opts = copy.deepcopy(opts)
            group_opts.ransac.min_inlier_ratio = ratio
            _verify_listed(db_path, [(names[a], names[b]) for p in group
                                     for a, b in [to_pair(p)]], group_opts)
    if pending:
        with pycolmap.Database.open(db_path) as db:
            missed = [to_pair(p) for p in sorted(pending)
                      if not db.exists_two_view_geometry(*to_pair(p))]
        if missed:
            raise DatabaseError(f"COLMAP did not verify {len(missed)} pair(s) (image ids "
                                f"{missed[:5]})")
    with pycolmap.Database.open(db_path) as db:
        inliers = {int(p): int(n) for p, n in zip(*db.read_two_view_geometry_num_inliers())}
    stats["pairs_with_inliers"] = sum(1 for p in requested if inliers.get(p, 0) > 0)
    stats["inlier_matches"] = sum(inliers.get(p, 0) for p in requested)
    logger.info("%s: verified %d pairs (%d already done, %d with too few matches); %d of %d "
                "requested pairs have inliers", db_path, stats["pairs_verified"],
                stats["pairs_already_verified"], stats["pairs_too_few_matches"],
                stats["pairs_with_inliers"], stats["pairs_requested"])
    return stats


def _write_degenerate(db_path: str, image_pairs: Sequence[tuple[int, int]]) -> None:
    """What COLMAP writes for a pair with too few matches: DEGENERATE, no inliers."""
    pycolmap = _pycolmap()
    with pycolmap.Database.open(db_path) as db, pycolmap.DatabaseTransaction(db):
        for id0, id1 in image_pairs:
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.DEGENERATE
            db.write_two_view_geometry(id0, id1, geometry)


def _verify_listed(db_path: str, name_pairs: Sequence[tuple[str, str]], opts: Any) -> None:
    """pycolmap.verify_matches on a temporary COLMAP pairs file (names without spaces)."""
    if not name_pairs:
        return
    with tempfile.TemporaryDirectory(dir=Path(db_path).parent) as tmp:
        path = Path(tmp) / "pairs.txt"
        path.write_text("".join(f"{a} {b}\n" for a, b in name_pairs), "utf-8")
        _pycolmap().verify_matches(db_path, str(path), options=opts)


def _verify_all(db_path: str, pending: set[int], unrequested: set[int], opts: Any,
                num_threads: int) -> None:
    """pycolmap.geometric_verification over every matched pair, then the geometries of the
    pairs not asked for are deleted again (names with spaces: no pairs file possible)."""
    pycolmap = _pycolmap()
    if not pending:
        return
    verifier = pycolmap.GeometricVerifierOptions()
    verifier.num_threads = num_threads
    pycolmap.geometric_verification(db_path, verifier_options=verifier,
                                    two_view_geometry_options=opts)
    with pycolmap.Database.open(db_path) as db:
        for p in unrequested:
            pair = pycolmap.pair_id_to_image_pair(p)
            if db.exists_two_view_geometry(*pair):
                db.delete_two_view_geometry(*pair)


def verified_inliers(db_path: str | Path, pairs: Sequence[tuple[str, str]]
                     ) -> dict[tuple[str, str], np.ndarray]:
    """{(name0, name1): [K, 2] keypoint index pairs} of the geometrically verified matches
    (empty for a pair that is not in the database or was not verified)."""
    import pycolmap

    out = {}
    with pycolmap.Database.open(str(db_path)) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        for a, b in pairs:
            if a not in ids or b not in ids or not db.exists_two_view_geometry(ids[a], ids[b]):
                out[(a, b)] = np.zeros((0, 2), np.int64)
                continue
            inl = np.asarray(db.read_two_view_geometry(ids[a], ids[b]).inlier_matches, np.int64)
            out[(a, b)] = inl.reshape(-1, 2)
    return out
