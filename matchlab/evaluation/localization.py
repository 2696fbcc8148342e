"""Localization benchmark: strecha_fountain_P11, a model of 6 images, the other 5 localized.

The model is built by `run_sfm` from every other image of the sequence (MODEL_IMAGES), and
the images between them (QUERY_IMAGES) are localized against it (`sfm.localization`). The
model is aligned to the ground-truth cameras by a 7-DoF similarity fitted on the MODEL images
only (Umeyama on camera centres), so the queries' ground truth is never used for the
alignment. Errors of each query: camera-centre distance (metres, and % of the ground-truth
camera extent, the largest distance between two of the 11 GT centres) and rotation angle
(degrees); recall = fraction of queries within each (metres, degrees) threshold pair.

Triangulation (`compare_triangulation`): the model images' ground-truth poses and
intrinsics given to `matchlab triangulate` with the model's own features, matches and pairs;
its points (count, mean reprojection error, mean track length) beside the model's.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Mapping

import numpy as np

DATASET = "strecha_fountain_P11"
MODEL_IMAGES = ("0000.jpg", "0002.jpg", "0004.jpg", "0006.jpg", "0008.jpg", "0010.jpg")
QUERY_IMAGES = ("0001.jpg", "0003.jpg", "0005.jpg", "0007.jpg", "0009.jpg")
THRESHOLDS = ((0.01, 0.5), (0.05, 1.0), (0.25, 2.0))  # (metres, degrees)


def _link_images(source: Path, names, folder: Path) -> Path:
    """A folder holding just `names` of `source` (symbolic links, copies where impossible)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = folder / name
        if not target.exists():
            try:
                os.symlink((source / name).resolve(), target)
            except OSError:
                shutil.copy2(source / name, target)
    return folder


def _share_stores(source: Path, target: Path, files) -> None:
    """Copy the stores of the other camera setting's run (the same features and matches:
    made once); their records are checked again when they are reused."""
    if all((source / f).is_file() for f in files) and not any((target / f).exists() for f in files):
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(source / f, target / f)


def query_errors(rec, poses: Mapping, cameras: Mapping, model_names=MODEL_IMAGES) -> dict:
    """Errors of localized query poses against ground truth.

    rec:     the model (pycolmap.Reconstruction); aligned to GT on `model_names` only.
    poses:   {query: pycolmap.Rigid3d cam_from_world} in the model's frame.
    cameras: {name: datasets.readers.Camera} ground truth (R camera-to-world, C centre).
    Returns position_errors_m, rotation_errors_deg ({query: value}), extent_m, scale, and
    the model images' own errors after the alignment: model_alignment_median_m (centres),
    model_rotation_median_deg.
    """
    from ..sfm import align_and_compare

    model_gt = {n: cameras[n].C for n in model_names}
    alignment = align_and_compare(rec, model_gt, {n: cameras[n].R.T for n in model_names})
    sim = alignment["similarity"]
    centres = np.stack([c.C for c in cameras.values()])
    extent = float(np.max(np.linalg.norm(centres[:, None] - centres[None], axis=-1)))
    position, rotation = {}, {}
    for name, pose in poses.items():
        r_model = np.asarray(pose.rotation.matrix())
        centre = -r_model.T @ np.asarray(pose.translation)
        position[name] = float(np.linalg.norm(sim.apply(centre) - cameras[name].C))
        # x_cam = R_model X_model and X_gt = s R_sim X_model + t  =>  R = R_model R_sim^T
        relative = r_model @ sim.rotation.T @ cameras[name].R  # GT world-to-camera is R^T
        cos = (np.trace(relative) - 1) / 2
        rotation[name] = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return {"position_errors_m": position, "rotation_errors_deg": rotation,
            "extent_m": extent, "scale": float(sim.scale),
            "model_alignment_median_m": alignment["median_error"],
            "model_rotation_median_deg": alignment.get("median_rotation_error_deg")}


def recalls(errors: dict, queries=QUERY_IMAGES, thresholds=THRESHOLDS) -> dict[str, float]:
    """{'1cm,0.5deg': fraction of `queries` within both thresholds, ...}; a query that was
    not localized counts as a miss."""
    out = {}
    for metres, degrees in thresholds:
        hits = sum(1 for q in queries if q in errors["position_errors_m"]
                   and errors["position_errors_m"][q] <= metres
                   and errors["rotation_errors_deg"][q] <= degrees)
        out[f"{metres * 100:g}cm,{degrees:g}deg"] = hits / len(queries)
    return out


def evaluate_localization(config, output_dir: str | Path, calibrated: bool = False,
                          device=None, progress: bool = True) -> dict:
    """Build the fountain model with `config` (a pipeline.SfMConfig), localize the queries,
    compare with ground truth. calibrated: the model images and the queries get the GT
    intrinsics (PINHOLE; the model through `SfMConfig.camera_params`, held fixed in mapping,
    the queries through a --query-cameras file); otherwise COLMAP's prior focal, estimated and
    refined, with the principal point at the image centre (fountain's is 15 px off: about
    0.3 degrees of rotation error in every camera, model and queries alike).
    A model this config made in output_dir is reused; the localization resumes."""
    from ..datasets import dataset_path
    from ..datasets.readers import strecha_cameras
    from ..pipeline import run_sfm
    from ..sfm import read_model
    from ..sfm.localization import LOCALIZED, localize

    output_dir = Path(output_dir)
    images = dataset_path(DATASET) / "images"
    config = replace(config, camera_mode="single")
    cameras = strecha_cameras(DATASET)
    if calibrated:
        k = cameras[MODEL_IMAGES[0]].K
        config = replace(config, camera_model="PINHOLE",
                         camera_params=[float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                                        float(k[1, 2])])
    start = time.perf_counter()
    model_dir = output_dir / ("model_calibrated" if calibrated else "model")
    _share_stores(output_dir / ("model" if calibrated else "model_calibrated"), model_dir,
                  ("features.h5", "matches.h5"))
    try:  # a model made with this config is reused (the other camera setting's run)
        done = json.loads((model_dir / "summary.json").read_text())["config"] == json.loads(
            json.dumps(asdict(config)))
    except (OSError, ValueError, KeyError):
        done = False
    if not done:
        run_sfm(_link_images(images, MODEL_IMAGES, output_dir / "model_images"), model_dir,
                config, progress=progress, log=lambda _: None, report=False, device=device)
    model_seconds = time.perf_counter() - start
    query_cameras = None
    if calibrated:
        query_cameras = output_dir / "query_cameras.txt"
        query_cameras.write_text(_cameras_text(cameras, QUERY_IMAGES))
    queries_dir = output_dir / ("queries_calibrated" if calibrated else "queries")
    _share_stores(output_dir / ("queries" if calibrated else "queries_calibrated"), queries_dir,
                  ("features.h5",))
    found = localize(model_dir, images, queries_dir,
                     names=QUERY_IMAGES, query_cameras=query_cameras, device=device,
                     progress=progress, log=None)
    errors = query_errors(read_model(model_dir / "sparse"), found.poses, cameras)
    triangulation = compare_triangulation(config, model_dir,
                                          _link_images(images, MODEL_IMAGES, output_dir / "model_images"),
                                          output_dir / ("triangulation_calibrated" if calibrated
                                                        else "triangulation"),
                                          cameras, progress)
    position = list(errors["position_errors_m"].values())
    rotation = list(errors["rotation_errors_deg"].values())
    seconds = [r.get("seconds", 0.0) for r in found.queries.values()]
    return {
        "benchmark": "localization", "dataset": DATASET, "config": asdict(config),
        "calibrated": calibrated, "model_images": list(MODEL_IMAGES),
        "queries": len(QUERY_IMAGES),
        "localized": sum(r["status"] == LOCALIZED for r in found.queries.values()),
        "median_position_error_m": float(np.median(position)) if position else None,
        "max_position_error_m": float(np.max(position)) if position else None,
        "median_position_error_rel": (float(np.median(position)) / errors["extent_m"]
                                      if position else None),
        "median_rotation_error_deg": float(np.median(rotation)) if rotation else None,
        "max_rotation_error_deg": float(np.max(rotation)) if rotation else None,
        "recall": recalls(errors), "extent_m": errors["extent_m"],
        "model_alignment_median_m": errors["model_alignment_median_m"],
        "model_rotation_median_deg": errors["model_rotation_median_deg"],
        "errors": errors, "inliers": {n: r.get("inliers") for n, r in found.queries.items()},
        "seconds_per_query": float(np.mean(seconds)) if seconds else None,
        "model_seconds": model_seconds, "triangulation": triangulation,
    }


def write_ground_truth(cameras: Mapping, names, poses_path: Path, cameras_path: Path) -> None:
    """Ground truth of `names` as a poses file (world-to-camera) and a cameras file (PINHOLE
    fx fy cx cy), hloc's formats (`sfm.poses`). cameras: {name: datasets.readers.Camera}."""
    import pycolmap

    from ..sfm.poses import pose_to_qt, write_poses_file

    poses = {}
    for name in names:
        rotation, translation = cameras[name].world_to_camera()
        poses[name] = pose_to_qt(pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), translation))
    write_poses_file(poses_path, poses)
    cameras_path.write_text(_cameras_text(cameras, names))


def _cameras_text(cameras: Mapping, names) -> str:
    """hloc cameras-file lines (`name PINHOLE W H fx fy cx cy`) of the ground truth."""
    return "".join(f"{n} PINHOLE {cameras[n].width} {cameras[n].height} "
                   + " ".join(repr(float(cameras[n].K[i, j]))
                              for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))) + "\n"
                   for n in names)


TRIANGULATION_KEYS = ("num_points3D", "mean_reprojection_error", "mean_track_length",
                      "num_observations")


def compare_triangulation(config, model_dir: Path, image_dir: Path, work_dir: Path,
                          cameras: Mapping, progress: bool = True) -> dict:
    """`triangulate` the model images from their ground-truth poses with the model's
    features, matches and pairs (copied from model_dir: nothing is extracted or matched
    again), beside the `matchlab sfm` model of model_dir. Returns {"triangulate": {...},
    "sfm": {...}} with TRIANGULATION_KEYS, plus the triangulation's pose_change and seconds."""
    from ..sfm.triangulation import triangulate

    out = work_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    names = json.loads((model_dir / "summary.json").read_text())["registered"]
    for name in ("features.h5", "matches.h5"):
        if not (out / name).exists():
            shutil.copy(model_dir / name, out / name)
    write_ground_truth(cameras, names, work_dir / "gt_poses.txt", work_dir / "gt_cameras.txt")
    start = time.perf_counter()
    found = triangulate(image_dir, work_dir / "gt_poses.txt", out,
                        cameras=work_dir / "gt_cameras.txt",
                        config=replace(config, pairs=f"file:{model_dir / 'pairs.txt'}"),
                        progress=progress, log=None, report=False)
    seconds = time.perf_counter() - start
    sfm = json.loads((model_dir / "summary.json").read_text())
    return {"triangulate": {**{k: found.summary[k] for k in TRIANGULATION_KEYS},
                            "pose_change": found.summary["pose_change"], "seconds": seconds},
            "sfm": {k: sfm[k] for k in TRIANGULATION_KEYS}, "images": names,
            "pairs": "the model's pairs.txt"}
