"""3D points from known camera poses (`matchlab triangulate IMAGE_DIR POSES OUT_DIR`).

The poses (and intrinsics) come from SLAM, ARKit, a rig or another model: a COLMAP model
folder, or a poses file with a cameras file (`poses.read_known_poses`). The images of
IMAGE_DIR that have a pose are extracted, paired (`--pairs`, also `nearest:K` and
`covisible:K` by camera centres, `retrieval.pose_pairs`) and matched exactly as
`matchlab sfm` does, into the same resumable stores. The COLMAP database gets the given
cameras and poses (ids of the reference model), the keypoints and matches, and the same
two-view verification; then pycolmap's point triangulator (`triangulate_points`) makes the
points with every pose and intrinsic held fixed (its bundle adjustment moves points only).
`refine=True` then runs a bundle adjustment of poses and points (intrinsics stay fixed).

Images of IMAGE_DIR without a pose are named and skipped; an image of POSES that is not in
IMAGE_DIR is an error (a typo in a name must not silently drop a camera). A camera whose
size differs from its image's is an error (keypoints are in the image's pixels).

OUT_DIR is laid out as `matchlab sfm`'s: features.h5, pairs.txt, matches.h5, database.db,
sparse/, sparse_text/, points3D.ply, summary.json (with `pose_change`: the largest move of
a camera centre and rotation against the input, 0 unless refined), report.html, plots/.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import DatabaseError, ReconstructionError, UsageError
from .colmap import pycolmap_module as _pycolmap
from .poses import camera_entry, model_from_poses, read_known_poses

__all__ = ["triangulate", "Triangulation", "DEFAULT_PAIRS", "write_reference_database",
           "pose_change"]

DEFAULT_PAIRS = "covisible:20"
# Points seen in two images only are kept (COLMAP's mapper drops them: with poses still to be
# estimated a third view is its only check). The poses are known here, so the two-view
# points are checked by them: on fountain's 6 model images, 4254 points at 0.47 px instead of
# 1782 at 0.61 px (`matchlab sfm`: 1814 at 0.56 px). mapper_options override it.
TRIANGULATION_OPTIONS = {"triangulation.ignore_two_view_tracks": False}


@dataclass
class Triangulation:
    """What `triangulate` returns: the pycolmap.Reconstruction (poses as given unless
    refined) and its summary (as OUT_DIR/summary.json)."""

    reconstruction: Any
    summary: dict


def write_reference_database(db_path: str | os.PathLike, rec) -> None:
    """Put the cameras, trivial rigs, frames and images of `rec` into a COLMAP database with
    `rec`'s ids (pycolmap's triangulator pairs them by id). Images already there must have
    the same id, camera id and intrinsics (else `DatabaseError`: the database is stale)."""
    pycolmap = _pycolmap()
    with pycolmap.Database.open(str(db_path)) as db:
        stored = {im.name: im for im in db.read_all_images()}
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
        with pycolmap.DatabaseTransaction(db):
            for image in rec.images.values():
                camera = rec.cameras[image.camera_id]
                old = stored.get(image.name)
                if old is not None:
                    same = (old.image_id == image.image_id and old.camera_id == image.camera_id
                            and camera_entry(cameras[old.camera_id]) == camera_entry(camera))
                    if not same:
                        raise DatabaseError(f"{db_path} holds {image.name!r} with another id or "
                                            f"camera than the given poses; it is stale: "
                                            f"delete it")
                    continue
                if camera.camera_id not in cameras:
                    db.write_camera(camera, use_camera_id=True)
                    db.write_rig(rec.rigs[camera.camera_id], use_rig_id=True)
                    cameras[camera.camera_id] = camera
                db.write_frame(rec.frames[image.frame_id], use_frame_id=True)
                db.write_image(image, use_image_id=True)


def pose_change(rec, known: Mapping[str, tuple]) -> dict[str, float]:
    """{'max_centre_m', 'max_rotation_deg'}: the largest differences between the poses of
    `rec`'s images and the given ones (`known`: {name: (cam_from_world, camera entry)};
    centre distance in the poses' unit, rotation angle in degrees)."""
    centre, angle = 0.0, 0.0
    for image in rec.images.values():
        given, now = known[image.name][0], image.cam_from_world()
        r0, r1 = (np.asarray(p.rotation.matrix()) for p in (given, now))
        c0, c1 = (-r.T @ np.asarray(p.translation) for r, p in ((r0, given), (r1, now)))
        centre = max(centre, float(np.linalg.norm(c1 - c0)))
        rel = r1 @ r0.T  # angle from sin and cos: exact near 0, unlike arccos alone
        sin = np.linalg.norm([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0],
                              rel[1, 0] - rel[0, 1]]) / 2
        angle = max(angle, float(np.degrees(np.arctan2(sin, (np.trace(rel) - 1) / 2))))
    return {"max_centre_m": centre, "max_rotation_deg": angle}


def _triangulate_points(rec, db_path: Path, image_dir: Path, work: Path, options: dict,
                        clear: bool = True):
    """pycolmap's point triangulator on `rec` (poses and intrinsics fixed); returns it.
    clear: drop `rec`'s points first (else they are kept and completed)."""
    from .reconstruction import _pipeline_options

    pycolmap = _pycolmap()
    with tempfile.TemporaryDirectory(dir=work, prefix=".triangulate-") as tmp:
        return pycolmap.triangulate_points(rec, str(db_path), str(image_dir), tmp,
                                           clear_points=clear,
                                           options=_pipeline_options("incremental", options),
                                           refine_intrinsics=False)


def _refine_poses(rec) -> None:
    """Bundle adjustment of poses and points, intrinsics fixed (in place). The gauge is
    fixed on two cameras (COLMAP's TWO_CAMS_FROM_WORLD), so the frame stays the given one."""
    pycolmap = _pycolmap()
    options = pycolmap.BundleAdjustmentOptions(
        refine_focal_length=False, refine_principal_point=False, refine_extra_params=False,
        print_summary=False)
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in rec.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(options, config, rec).solve()


def _check_sizes(sizes: Mapping[str, tuple | None], known: Mapping[str, tuple],
                 turned: bool = False) -> None:
    """UsageError naming the first image whose size (W, H) is not its camera's. turned:
    the sizes are file headers, before EXIF orientation: (H, W) passes too."""
    for name, size in sizes.items():
        entry = known[name][1]
        expected = {(entry["width"], entry["height"])}
        if turned:
            expected.add((entry["height"], entry["width"]))
        if size is not None and tuple(size) not in expected:
            raise UsageError(f"the camera of {name} is {entry['width']}x{entry['height']} "
                             f"but the image is {size[0]}x{size[1]}; give the intrinsics "
                             f"of the image as it is in the folder")


def _header_size(path: Path) -> tuple[int, int] | None:
    """(W, H) from the file's header; None when unreadable (extraction then names it)."""
    from ..images import image_size

    try:
        return image_size(path)
    except (OSError, ValueError):  # ImageError is a ValueError
        return None


def triangulate(image_dir: str | os.PathLike, poses: str | os.PathLike,
                out_dir: str | os.PathLike, *, cameras: str | os.PathLike | None = None,
                config=None, refine: bool = False, device=None, progress: bool = True,
                log: Callable[[str], None] | None = print, plots: int = 3,
                report: bool = True, colmap_log: bool = False) -> Triangulation:
    """Triangulate the images of image_dir from their known poses (module doc).

    poses:   a COLMAP model folder, or a poses file (`name qw qx qy qz tx ty tz`,
             world-to-camera) with `cameras`, a cameras file (`name MODEL W H params...`).
    config:  a `pipeline.SfMConfig`: features, matcher, pairs (default DEFAULT_PAIRS),
             resize, max_keypoints, extractor/matcher options, global descriptor (retrieval
             pairs), gravity file, mapper_options (pycolmap IncrementalPipelineOptions for
             the triangulator: `triangulation.*`, `mapper.filter_max_reproj_error`, ...);
             its camera and mapper choices do not apply (the cameras are given).
    refine:  also refine the poses (bundle adjustment; intrinsics stay fixed).
    Every stage resumes as in `run_sfm`. Returns a `Triangulation`.
    """
    from ..images import list_images
    from ..store import FeatureStore
    from ..pipeline import (DEFAULT_MAPPER_OPTIONS, SfMConfig, check_gravity, extract_features,
                            finish_outputs, match_pairs, model_record, read_keypoints_and_matches,
                            StageReport)
    from ..io.gravity import read_gravity
    from ..registry import load_extractor, load_matcher
    from ..retrieval.pairs import parse_pairs_spec, write_pairs_file
    from ..retrieval.pose_pairs import centre_and_direction
    from ..retrieval.select import select_pairs
    from . import create_database, export_model, import_verified, model_summary, verify

    pycolmap = _pycolmap()
    if not colmap_log:
        pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 1)
    say = log or (lambda _: None)
    config = config or SfMConfig(pairs=DEFAULT_PAIRS)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    if not image_dir.is_dir():
        raise UsageError(f"image folder not found: {image_dir}")
    parse_pairs_spec(config.pairs, with_poses=True)  # a bad spec fails before any work
    known, unposed = read_known_poses(poses, cameras)
    names = list_images(image_dir)
    present = set(names)
    missing = [n for n in known if n not in present]
    if missing:
        raise UsageError(f"{len(missing)} image(s) of {poses} are not in {image_dir}: "
                         f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    skipped = {n: "no pose given" for n in names if n not in known}
    if skipped:
        say(f"skipped {len(skipped)} image(s) without a pose: {', '.join(list(skipped)[:5])}"
            + (" ..." if len(skipped) > 5 else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = load_extractor(config.features, **{"resize": config.resize,
                               "max_keypoints": config.max_keypoints, **config.extractor_conf})
    matcher = load_matcher(config.matcher, for_features=config.features, **config.matcher_conf)
    gravity = read_gravity(config.gravity_file) if config.gravity_file else None
    check_gravity(matcher, gravity)
    if device is not None:
        extractor, matcher = extractor.to(device), matcher.to(device)
    candidates = [n for n in names if n in known]
    _check_sizes({n: _header_size(image_dir / n) for n in candidates}, known, turned=True)
    reports = [extract_features(image_dir, candidates, out_dir / "features.h5", extractor,
                                progress=progress, log=say,
                                record=model_record(config.features, extractor))]
    skipped.update(reports[-1].failed)
    good = [n for n in candidates if n not in skipped]
    if len(good) < 2:
        raise ReconstructionError(f"fewer than two readable images with a pose in "
                                  f"{image_dir}; skipped: {skipped}")
    with FeatureStore(out_dir / "features.h5", "r") as store:  # EXIF orientation applied
        _check_sizes({n: store.read(n).image_size for n in good}, known)

    pairs = select_pairs(config.pairs, good, image_dir=image_dir, output_dir=out_dir,
                         global_descriptor=config.global_descriptor, progress=progress,
                         poses={n: centre_and_direction(known[n][0]) for n in good})
    write_pairs_file(out_dir / "pairs.txt", pairs)
    reports.append(match_pairs(pairs, out_dir / "features.h5", out_dir / "matches.h5",
                               matcher, progress=progress, device=device,
                               record=model_record(config.matcher, matcher), gravity=gravity))

    start = time.perf_counter()
    db = out_dir / "database.db"
    rec = model_from_poses({n: known[n] for n in candidates}, good)
    write_reference_database(db, rec)
    keypoints, pair_matches = read_keypoints_and_matches(out_dir / "features.h5",
                                                         out_dir / "matches.h5", good, pairs)
    with keypoints, pair_matches:  # read one item at a time
        create_database(db, image_dir, good, keypoints, pair_matches, progress=progress)
    if matcher.capabilities.verifies_geometry:
        import_verified(db, pairs)
    if not pairs or verify(db, pairs)["pairs_with_inliers"] == 0:
        raise ReconstructionError(f"none of the {len(pairs)} pairs ({config.pairs}) has "
                                  f"verified matches: nothing to triangulate")
    reports.append(StageReport("database", done=len(pairs), seconds=time.perf_counter() - start))

    start = time.perf_counter()
    options = {**DEFAULT_MAPPER_OPTIONS, **TRIANGULATION_OPTIONS, **config.mapper_options}
    rec = _triangulate_points(rec, db, image_dir, out_dir, options)
    if refine:  # then the points the refined poses let through
        _refine_poses(rec)
        rec = _triangulate_points(rec, db, image_dir, out_dir, options, clear=False)
    export_model(rec, out_dir)
    reports.append(StageReport("triangulate", done=1, seconds=time.perf_counter() - start))
    summary = model_summary(rec, good)
    summary.update(skipped=skipped, unposed_in_model=unposed, poses=str(Path(poses).resolve()),
                   cameras=str(Path(cameras).resolve()) if cameras else None, refine=refine,
                   pose_change=pose_change(rec, known), config=asdict(config),
                   image_dir=str(image_dir.resolve()))
    finish_outputs(out_dir, image_dir, rec, summary, reports, pairs, keypoints, pair_matches,
                   plots, say, report)
    return Triangulation(rec, summary)
