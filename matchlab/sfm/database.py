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

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..retrieval.pairs import dedupe_pairs, read_pairs_file
from ..errors import DatabaseError
from .colmap import pycolmap_module as _pycolmap
from .options import apply_options

logger = logging.getLogger(__name__)

__all__ = ["DatabaseError", "CAMERA_MODES", "create_database", "verify", "read_image_ids",
           "import_verified", "verified_inliers",
           "DEFAULT_VERIFICATION_OPTIONS"]

CAMERA_MODES = ("auto", "single", "per_folder", "per_image")

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


def _check_inputs(names: Sequence[str], keypoints: Mapping[str, np.ndarray],
                  matches: Mapping[tuple[str, str], np.ndarray]
                  ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], np.ndarray]]:
    if isinstance(names, str):
        raise DatabaseError("names must be a list of image names, not a single string")
    names = list(names)
    if not names:
        raise DatabaseError("no image names given")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatabaseError(f"image names repeated in the list: {dup[:5]}")
    kps: dict[str, np.ndarray] = {}
    for name in names:
        if name not in keypoints:
            raise DatabaseError(f"no keypoints given for image {name!r}")
        k = np.asarray(keypoints[name])
        if k.ndim != 2 or k.shape[1] != 2:
            raise DatabaseError(f"keypoints of {name!r} must be [N, 2], got shape {k.shape}")
        if not np.isfinite(k).all():
            raise DatabaseError(f"keypoints of {name!r} contain NaN or infinity")
        kps[name] = k.astype(np.float64)
    known = set(names)
    out: dict[tuple[str, str], np.ndarray] = {}
    seen: set[frozenset[str]] = set()
    for pair, m in matches.items():
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise DatabaseError(f"match keys must be (name0, name1) tuples, got {pair!r}")
        a, b = pair
        for n in (a, b):
            if n not in known:
                raise DatabaseError(f"matches for pair {pair!r} name {n!r}, which is not in "
                                    "the image list")
        if a == b:
            raise DatabaseError(f"self-pair {pair!r} in matches")
        key = frozenset(pair)
        if key in seen:
            raise DatabaseError(f"matches given for both ({a!r}, {b!r}) and ({b!r}, {a!r}); "
                                "give one order only")
        seen.add(key)
        m = np.asarray(m)
        if m.size == 0:
            m = m.reshape(0, 2)
        if m.ndim != 2 or m.shape[1] != 2:
            raise DatabaseError(f"matches of {pair!r} must be [M, 2], got shape {m.shape}")
        if m.size and not (np.issubdtype(m.dtype, np.integer)
                           or np.array_equal(m, np.round(m))):
            raise DatabaseError(f"matches of {pair!r} must be integer indices, got {m.dtype}")
        m = m.astype(np.int64)
        if m.size:
            if m.min() < 0:
                raise DatabaseError(f"matches of {pair!r} contain negative indices")
            if m[:, 0].max() >= len(kps[a]) or m[:, 1].max() >= len(kps[b]):
                raise DatabaseError(
                    f"matches of {pair!r} index past the keypoints ({len(kps[a])} in {a!r}, "
                    f"{len(kps[b])} in {b!r}; largest indices {m[:, 0].max()}, "
                    f"{m[:, 1].max()})")
        out[(a, b)] = m
    return kps, out


def create_database(db_path: str | os.PathLike, image_dir: str | os.PathLike,
                    names: Sequence[str], keypoints: Mapping[str, np.ndarray],
                    matches: Mapping[tuple[str, str], np.ndarray],
                    camera_model: str = "SIMPLE_RADIAL", camera_mode: str = "auto",
                    camera_params: Sequence[float] | None = None,
                    image_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Create (or complete) a COLMAP database from plain keypoints and matches.

    db_path:       the .db file; created if missing, completed if it exists.
    image_dir:     root folder of the images to import; `names` are paths relative to it
                   (images already in the database need no file there).
    keypoints:     {name: [N, 2] float} in matchlab's pixel-centre convention (module doc).
    matches:       {(name0, name1): [M, 2] int} keypoint indices; pairs with zero matches
                   are recorded too (so a re-run knows they were tried).
    camera_model:  a COLMAP camera model name (SIMPLE_RADIAL, PINHOLE, OPENCV, ...).
    camera_mode:   "auto" (COLMAP: a camera per distinct size/EXIF focal; without EXIF
                   that is one camera per image), "single", "per_folder" or "per_image".
    camera_params: known intrinsics for `camera_model` (e.g. [f, cx, cy, k]); by default
                   COLMAP's prior: EXIF focal length, else 1.2 * max(width, height).
    image_options: further `pycolmap.ImageReaderOptions` fields (e.g. mask_path).

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
    existing = {}
    if db_path.is_file():  # (opening creates the file: not before the inputs are checked)
        with pycolmap.Database.open(str(db_path)) as db:
            existing = {im.name: im for im in db.read_all_images()}
    to_import = [n for n in names if n not in existing] if not isinstance(names, str) else []
    missing_files = [n for n in to_import if not (image_dir / n).is_file()]
    if missing_files:  # images already in the database may live elsewhere (`sfm --extend`)
        raise DatabaseError(f"{len(missing_files)} image(s) not found under {image_dir}: "
                            f"{missing_files[:5]}")
    kps, pair_matches = _check_inputs(names, keypoints, matches)
    names = list(names)
    mode = _camera_mode(camera_mode)
    db_path.parent.mkdir(parents=True, exist_ok=True)

    with pycolmap.Database.open(str(db_path)):  # creates it: import_images needs the file
        pass
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

    with pycolmap.Database.open(str(db_path)) as db:
        # Check everything already stored before writing anything.
        new_keypoints, new_matches = [], []
        for name in names:
            k = (kps[name] + 0.5).astype(np.float32)
            if not db.exists_keypoints(ids[name]):
                new_keypoints.append((ids[name], k))
                continue
            old = db.read_keypoints(ids[name])[:, :2]
            if old.shape != k.shape or not np.allclose(old, k, atol=1e-3):
                raise DatabaseError(
                    f"{db_path} already holds different keypoints for {name!r} "
                    f"({len(old)} stored, {len(k)} given); it is stale: delete it")
        for (a, b), m in pair_matches.items():
            id0, id1 = ids[a], ids[b]
            if not db.exists_matches(id0, id1):
                new_matches.append((id0, id1, m.astype(np.uint32)))
                continue
            old = db.read_matches(id0, id1).astype(np.int64)  # oriented as (id0, id1)
            # a set of index pairs: a pair matched in the other order lists them otherwise
            if old.shape != m.shape or not np.array_equal(np.unique(old, axis=0),
                                                          np.unique(m, axis=0)):
                raise DatabaseError(
                    f"{db_path} already holds different matches for ({a!r}, {b!r}) "
                    f"({len(old)} stored, {len(m)} given); it is stale: delete it")
        with pycolmap.DatabaseTransaction(db):
            for image_id, k in new_keypoints:
                db.write_keypoints(image_id, k)
            for id0, id1, m in new_matches:
                db.write_matches(id0, id1, m)
    stats = {"images_added": len(to_import), "images_existing": len(names) - len(to_import),
             "keypoints_added": len(new_keypoints),
             "keypoints_existing": len(names) - len(new_keypoints),
             "matches_added": len(new_matches),
             "matches_existing": len(pair_matches) - len(new_matches)}
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


def verify(db_path: str | os.PathLike,
           pairs: str | os.PathLike | Iterable[Sequence[str]] | None = None,
           options: Mapping[str, Any] | Any = None, num_threads: int = -1,
           ) -> dict[str, Any]:
    """Geometric verification (RANSAC on E / F / H) of matched pairs, through pycolmap.

    pairs:   None verifies every matched pair in the database; otherwise a pairs file
             (matchlab/hloc format, see matchlab.retrieval.pairs) or a list of name pairs.
             Every requested pair must have matches in the database.
    options: `pycolmap.TwoViewGeometryOptions` fields (nested / dotted / flat keys, see
             matchlab.sfm.options) over hloc's defaults DEFAULT_VERIFICATION_OPTIONS
             (ransac.max_num_trials=20000, ransac.min_inlier_ratio=0.1,
             ransac.random_seed=0), or an options
             object used as is.

    num_threads: threads of pycolmap.geometric_verification (-1: all), used when pairs is
             None or names contain spaces; otherwise pycolmap.verify_matches runs on a
             temporary COLMAP pairs file.

    Pairs that already have a two-view geometry are skipped (resumable); pairs stored with
    zero matches are not verified. COLMAP writes a geometry for each verified pair with its
    configuration set (CALIBRATED, UNCALIBRATED, PLANAR...; a failed pair gets DEGENERATE
    and no inliers), so the UNDEFINED trap of hand-written geometries does not arise.
    Returns counts over the requested pairs: requested, without matches, already
    verified, newly verified, pairs with inliers, and inlier matches.
    """
    pycolmap = _pycolmap()
    db_path = str(db_path)
    if not Path(db_path).is_file():
        raise DatabaseError(f"database not found: {db_path}")
    opts = _two_view_options(options)
    ids = read_image_ids(db_path)

    def to_pair(pair_id: int) -> tuple[int, int]:
        id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
        return int(id0), int(id1)

    with pycolmap.Database.open(db_path) as db:
        # read_all_matches leaves out pairs with zero matches: those need no RANSAC.
        matched = {int(p) for p in db.read_all_matches()[0]}
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
            by_id = {int(pycolmap.image_pair_to_pair_id(ids[a], ids[b])): (a, b)
                     for a, b in pair_list}
            requested = set(by_id) & matched
            empty = len(by_id) - len(requested)
        unverified = {p for p in matched if not db.exists_two_view_geometry(*to_pair(p))}
    pending = requested & unverified
    stats: dict[str, Any] = {
        "pairs_requested": len(requested) + empty, "pairs_without_matches": empty,
        "pairs_already_verified": len(requested - pending), "pairs_verified": len(pending)}
    if pending:
        pending_names = [by_id[p] for p in sorted(pending)] if pairs is not None else []
        # COLMAP's pairs-file reader splits on spaces and only logs names it cannot find.
        if pairs is not None and not any(c.isspace() for p in pending_names for n in p
                                         for c in n):
            with tempfile.TemporaryDirectory(dir=Path(db_path).parent) as tmp:
                path = Path(tmp) / "pairs.txt"
                path.write_text("".join(f"{a} {b}\n" for a, b in pending_names), "utf-8")
                pycolmap.verify_matches(db_path, str(path), options=opts)
        else:
            verifier = pycolmap.GeometricVerifierOptions()
            verifier.num_threads = num_threads
            pycolmap.geometric_verification(db_path, verifier_options=verifier,
                                            two_view_geometry_options=opts)
        with pycolmap.Database.open(db_path) as db:
            # geometric_verification covers every matched pair: drop the unrequested ones.
            for p in unverified - requested:
                if db.exists_two_view_geometry(*to_pair(p)):
                    db.delete_two_view_geometry(*to_pair(p))
            missed = [to_pair(p) for p in sorted(pending)
                      if not db.exists_two_view_geometry(*to_pair(p))]
        if missed:
            raise DatabaseError(f"COLMAP did not verify {len(missed)} pair(s) (image ids "
                                f"{missed[:5]})")
    with pycolmap.Database.open(db_path) as db:
        pair_ids, geometries = db.read_two_view_geometries()
    inliers = {int(p): len(g.inlier_matches) for p, g in zip(pair_ids, geometries)}
    stats["pairs_with_inliers"] = sum(1 for p in requested if inliers.get(p, 0) > 0)
    stats["inlier_matches"] = sum(inliers.get(p, 0) for p in requested)
    logger.info("%s: verified %d pairs (%d already done); %d of %d requested pairs have "
                "inliers", db_path, stats["pairs_verified"], stats["pairs_already_verified"],
                stats["pairs_with_inliers"], stats["pairs_requested"])
    return stats


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
