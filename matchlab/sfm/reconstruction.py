"""Mapping (incremental or global) on a verified COLMAP database, export, summaries, and
comparison with ground-truth camera centres.

Output layout of `reconstruct(db, image_dir, out_dir)`:

    out_dir/models/0, 1, ...   every model pycolmap produced (COLMAP binary)
    out_dir/sparse/            the largest model, COLMAP binary (cameras/images/points3D/
                               rigs/frames .bin) - what COLMAP, hloc and pycolmap read
    out_dir/sparse_text/       the same model as COLMAP text files
    out_dir/points3D.ply       its 3D points with colours

Each is replaced on every run; a file there that matchlab did not write stops the run
instead (`outputs`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from ..geometry.similarity import umeyama
from ..errors import ReconstructionError
from .colmap import pycolmap_module as _pycolmap
from .options import apply_options, option_fields
from .outputs import check_replaceable, replace_output

logger = logging.getLogger(__name__)

__all__ = ["ReconstructionError", "MAPPERS", "pick_mapper", "reconstruct", "export_model", "read_model",
           "model_summary", "camera_centres", "align_and_compare"]

@dataclass(frozen=True)
class Mapper:
    """A pycolmap mapper: its options class, its mapping function (by name), and the options
    that make its bundle adjustments leave known intrinsics as given."""

    options: str
    function: str
    fixed_intrinsics: Mapping[str, Any]


_INCREMENTAL_FIXED = {"ba_refine_focal_length": False, "ba_refine_principal_point": False,
                      "ba_refine_extra_params": False}
MAPPERS = {
    "incremental": Mapper("IncrementalPipelineOptions", "incremental_mapping", _INCREMENTAL_FIXED),
    "global": Mapper("GlobalPipelineOptions", "global_mapping", {
        f"mapper.bundle_adjustment.refine_{what}": False
        for what in ("focal_length", "principal_point", "extra_params")}),
    # clusters of at most clustering_options.leaf_max_num_images images, each mapped
    # incrementally, merged; incremental options go in incremental_options
    "hierarchical": Mapper("HierarchicalPipelineOptions", "hierarchical_mapping",
                           _INCREMENTAL_FIXED),
}
EXPORTS = ("sparse", "sparse_text", "points3D.ply")  # what `export_model` writes
# `--mapper auto`: (largest number of images, mapper), first fit wins (docs/usage.md:
# measured on the synthetic street and the sample scenes).
AUTO_MAPPER_RULE = ((50, "incremental"), (None, "global"))


def pick_mapper(mapper: str, num_images: int) -> str:
    """The mapper to run: `mapper` itself, or for "auto" the first AUTO_MAPPER_RULE entry
    whose bound holds num_images."""
    if mapper != "auto":
        if mapper not in MAPPERS:
            raise ValueError(f"mapper must be one of {(*MAPPERS, 'auto')}, got {mapper!r}")
        return mapper
    for largest, name in AUTO_MAPPER_RULE:
        if largest is None or num_images <= largest:
            return name
    raise AssertionError("AUTO_MAPPER_RULE ends with an unbounded entry")


def _hierarchical_keys(options: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level IncrementalPipelineOptions keys that HierarchicalPipelineOptions lacks
    (random_seed, mapper, ...) go to its incremental_options, so the same option dict works
    for both mappers."""
    pycolmap = _pycolmap()
    own = set(option_fields(pycolmap.HierarchicalPipelineOptions()))
    incremental = set(option_fields(pycolmap.IncrementalPipelineOptions()))
    out = {}
    for key, value in options.items():
        head = key.split(".")[0]
        out[key if head in own or head not in incremental
            else f"incremental_options.{key}"] = value
    return out


def _pipeline_options(mapper: str, options: Mapping[str, Any] | Any):
    pycolmap = _pycolmap()
    if mapper not in MAPPERS:
        raise ValueError(f"mapper must be one of {tuple(MAPPERS)}, got {mapper!r}")
    cls = getattr(pycolmap, MAPPERS[mapper].options)
    if isinstance(options, cls):
        return options
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options for the {mapper} mapper must be a dict or a "
                        f"{cls.__name__}, got {type(options).__name__}")
    if mapper == "hierarchical" and options:
        options = _hierarchical_keys(options)
    return apply_options(cls(), options)


def reconstruct(db_path: str | os.PathLike, image_dir: str | os.PathLike,
                out_dir: str | os.PathLike, mapper: str = "incremental",
                options: Mapping[str, Any] | Any = None,
                image_names: Sequence[str] | None = None, export: bool = True):
    """Run one of pycolmap's mappers (MAPPERS); return the largest model.

    db_path:     a database with verified two-view geometries (`verify`).
    image_dir:   the images (read for point colours).
    out_dir:     outputs, see the module docstring. out_dir/models is replaced.
    mapper:      "incremental" (pycolmap.incremental_mapping), "global"
                 (pycolmap.global_mapping), "hierarchical" (pycolmap.hierarchical_mapping)
                 or "auto" (`pick_mapper` by the number of images).
    options:     the mapper's pipeline options (MAPPERS[...].options) fields as a dict with
                 nested, dotted or flat keys ({"mapper": {"init_min_num_inliers": 50}},
                 {"mapper.init_min_num_inliers": 50} or {"init_min_num_inliers": 50}; see
                 matchlab.sfm.options), or an options object used as is.
    image_names: reconstruct only these images (default: all in the database).
    export:      write out_dir/sparse, sparse_text and points3D.ply (`export_model`).

    "Largest" is the most registered images, then the most 3D points. Raises
    `ReconstructionError` when no model comes out.
    """
    pycolmap = _pycolmap()
    db_path, image_dir, out_dir = Path(db_path), Path(image_dir), Path(out_dir)
    if not db_path.is_file():
        raise ReconstructionError(f"database not found: {db_path}")
    if not image_dir.is_dir():
        raise ReconstructionError(f"image folder not found: {image_dir}")
    with pycolmap.Database.open(str(db_path)) as db:
        num_verified = len(db.read_two_view_geometries()[0])
        num_images = db.num_images()
    mapper = pick_mapper(mapper, num_images if image_names is None else len(image_names))
    opts = _pipeline_options(mapper, options)
    if image_names is not None:
        # the hierarchical mapper's clusters are incremental runs: they take the names
        target = opts.incremental_options if mapper == "hierarchical" else opts
        target.image_names = list(image_names)
    if num_verified == 0:
        raise ReconstructionError(f"{db_path} has no verified image pairs with inliers; "
                                  "run verify() first")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("models",) + (EXPORTS if export else ()):  # before the mapping's minutes
        check_replaceable(out_dir, name)
    run = getattr(pycolmap, MAPPERS[mapper].function)

    def map_into(models_dir: Path):
        models_dir.mkdir()
        return run(str(db_path), str(image_dir), str(models_dir), options=opts)

    start = time.perf_counter()
    recs = replace_output(out_dir, "models", map_into)
    elapsed = time.perf_counter() - start
    if not recs:
        raise ReconstructionError(
            f"the {mapper} mapper produced no model from {num_images} images and "
            f"{num_verified} verified pairs (too few inliers, or no good initial pair)")
    best = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    logger.info("%s mapping: %d model(s) in %.1f s; largest has %d/%d images, %d points",
                mapper, len(recs), elapsed, best.num_reg_images(), num_images,
                best.num_points3D())
    if export:
        export_model(best, out_dir)
    return best


def export_model(rec, out_dir: str | os.PathLike, text: bool = True,
                 ply: bool = True) -> dict[str, Path]:
    """Write `rec` as out_dir/sparse (binary), out_dir/sparse_text and out_dir/points3D.ply.

    Each output is written to a temporary name, then replaces the old one
    (`outputs.replace_output`: files matchlab did not write are never deleted).
    Returns {"sparse": ..., "sparse_text": ..., "ply": ...} (the ones written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def folder(write):
        return lambda tmp: (tmp.mkdir(), write(str(tmp)))

    targets = {"sparse": ("sparse", folder(rec.write_binary))}
    if text:
        targets["sparse_text"] = ("sparse_text", folder(rec.write_text))
    if ply:
        targets["ply"] = ("points3D.ply", lambda tmp: rec.export_PLY(str(tmp)))
    for name, _ in targets.values():
        check_replaceable(out_dir, name)
    for name, write in targets.values():
        replace_output(out_dir, name, write)
    return {key: out_dir / name for key, (name, _) in targets.items()}


def read_model(path: str | os.PathLike):
    """Load a COLMAP model folder (binary or text) as a pycolmap.Reconstruction."""
    path = Path(path)
    if not path.is_dir():
        raise ReconstructionError(f"model folder not found: {path}")
    return _pycolmap().Reconstruction(str(path))


def _registered_images(rec) -> list:
    return [rec.images[i] for i in rec.reg_image_ids()]


def camera_centres(rec) -> dict[str, np.ndarray]:
    """{image name: camera centre [3] in the model's world frame} of registered images."""
    return {im.name: np.asarray(im.projection_center(), dtype=np.float64)
            for im in _registered_images(rec)}


def model_summary(rec, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Statistics of a model, as plain Python values.

    Keys: num_reg_images, num_images (in the model), num_cameras, num_points3D,
    num_observations, mean_track_length, mean_observations_per_image,
    mean_reprojection_error (pixels), registered (sorted names) and, when the input
    image list `names` is given, num_input_images and unregistered (names in `names`
    that are not registered, in input order).
    """
    registered = sorted(im.name for im in _registered_images(rec))
    summary: dict[str, Any] = {
        "num_reg_images": int(rec.num_reg_images()),
        "num_images": int(rec.num_images()),
        "num_cameras": int(rec.num_cameras()),
        "num_points3D": int(rec.num_points3D()),
        "num_observations": int(rec.compute_num_observations()),
        "mean_track_length": float(rec.compute_mean_track_length()),
        "mean_observations_per_image": float(rec.compute_mean_observations_per_reg_image()),
        "mean_reprojection_error": float(rec.compute_mean_reprojection_error()),
        "registered": registered,
    }
    if names is not None:
        reg = set(registered)
        summary["num_input_images"] = len(names)
        summary["unregistered"] = [n for n in names if n not in reg]
    return summary


def align_and_compare(rec, gt_centres: Mapping[str, Sequence[float]],
                      gt_rotations: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Camera-centre errors of `rec` against ground truth after a 7-DoF similarity.

    gt_centres:   {image name: camera centre C [3] in the GT world frame}.
    gt_rotations: optional {image name: R [3, 3] world-to-camera (x_cam = R (X - C))};
                  adds rotation errors (degrees) after alignment.

    The similarity (Umeyama, least squares over all images registered in `rec` that have
    GT) maps model centres onto GT centres. Errors are in GT units and also relative to
    the GT camera extent: the largest distance between two GT centres (all of
    `gt_centres`, registered or not). Needs 3 or more common images.
    Returns: num_compared, missing (GT images not registered), extent, median_error,
    mean_error, max_error, median_error_rel, max_error_rel, errors ({name: error}), scale
    (GT units per model unit), similarity, and with rotations median/max_rotation_error_deg.
    """
    model = camera_centres(rec)
    gt = {n: np.asarray(c, dtype=np.float64).reshape(3) for n, c in gt_centres.items()}
    common = [n for n in gt if n in model]
    if len(common) < 3:
        raise ReconstructionError(f"only {len(common)} registered image(s) have ground truth; "
                                  "need 3 to compare camera centres")
    src = np.stack([model[n] for n in common])
    dst = np.stack([gt[n] for n in common])
    sim = umeyama(src, dst, with_scale=True)
    errors = np.linalg.norm(sim.apply(src) - dst, axis=1)
    all_gt = np.stack(list(gt.values()))
    extent = max(float(np.linalg.norm(all_gt[i:i + 256, None] - all_gt[None], axis=-1).max())
                 for i in range(0, len(all_gt), 256))  # in blocks: bounded memory
    result: dict[str, Any] = {
        "num_compared": len(common),
        "missing": [n for n in gt if n not in model],
        "extent": extent,
        "median_error": float(np.median(errors)),
        "mean_error": float(np.mean(errors)),
        "max_error": float(np.max(errors)),
        "median_error_rel": float(np.median(errors) / extent) if extent > 0 else float("nan"),
        "max_error_rel": float(np.max(errors) / extent) if extent > 0 else float("nan"),
        "errors": {n: float(e) for n, e in zip(common, errors)},
        "scale": sim.scale,
        "similarity": sim,
    }
    if gt_rotations is not None:
        rot_err = {}
        for im in _registered_images(rec):
            if im.name not in gt_rotations or im.name not in gt:
                continue
            r_model = np.asarray(im.cam_from_world().rotation.matrix())
            # x_cam = R_model X_model and X_gt = s R_sim X_model + t  =>  R = R_model R_sim^T
            r_aligned = r_model @ sim.rotation.T
            r_gt = np.asarray(gt_rotations[im.name], dtype=np.float64)
            cos = (np.trace(r_aligned @ r_gt.T) - 1) / 2
            rot_err[im.name] = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
        if rot_err:
            values = np.array(list(rot_err.values()))
            result["rotation_errors_deg"] = rot_err
            result["median_rotation_error_deg"] = float(np.median(values))
            result["max_rotation_error_deg"] = float(np.max(values))
    return result


def drop_weak_images(rec, min_points: int = 20, min_fraction: float = 0.1,
                     candidates: Collection[str] | None = None) -> dict[str, str]:
    """Deregister images that see too few 3D points to be trusted; returns {name: why}.

    An unrelated photo can pick up a few dozen spurious "verified" matches with every image
    (an epipolar band catches random matches) and get registered on a handful of points. An
    image seeing fewer than max(min_points, min_fraction x the median over registered images)
    3D points is removed from `rec` (in place) with its observations; only images named in
    `candidates` are considered when it is given (the median is over all registered images).
    """
    images = _registered_images(rec)
    if len(images) < 3:
        return {}
    counts = {im.image_id: im.num_points3D for im in images}
    floor = max(min_points, min_fraction * float(np.median(list(counts.values()))))
    dropped = {}
    for im in images:
        if counts[im.image_id] < floor and (candidates is None or im.name in candidates):
            dropped[im.name] = (f"registered on only {counts[im.image_id]} 3D points "
                                f"(threshold {floor:.0f}); treated as a false registration")
            rec.deregister_frame(im.frame_id)
    return dropped


def describe_auto_rule() -> str:
    """AUTO_MAPPER_RULE in words, as `matchlab sfm --help` states it."""
    parts, low = [], 0
    for largest, name in AUTO_MAPPER_RULE:
        parts.append(f"{name} from {low + 1} to {largest} images" if largest is not None
                     else f"{name} above {low}")
        low = largest if largest is not None else low
    return ", ".join(parts)
