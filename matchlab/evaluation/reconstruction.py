"""Reconstruction benchmark: `run_sfm` on strecha_fountain_P11 against its ground-truth cameras.

Reports registered images, and camera-centre errors after a 7-DoF similarity alignment
(Umeyama over the registered images): median and max in metres and relative to the extent of
the ground-truth camera positions (the largest distance between two GT centres).
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from ..errors import ConfigError

RECONSTRUCTION_DATASETS = {
    # fountain-P11 is one camera without EXIF: share its intrinsics ("single")
    "strecha_fountain_P11": {"subdir": "images", "camera_mode": "single"},
}


def evaluate_reconstruction(dataset: str, config, output_dir: str | Path,
                            progress: bool = True) -> dict:
    """Reconstruct `dataset` with `config` (a pipeline.SfMConfig) into output_dir and compare
    the cameras with ground truth. Resumable like `run_sfm` (features and matches reused)."""
    from ..datasets import dataset_path
    from ..datasets.readers import strecha_cameras
    from ..pipeline import run_sfm
    from ..sfm import align_and_compare, read_model

    if dataset not in RECONSTRUCTION_DATASETS:
        raise ConfigError(f"no reconstruction ground truth for {dataset!r}; available: "
                         f"{', '.join(RECONSTRUCTION_DATASETS)}")
    setup = RECONSTRUCTION_DATASETS[dataset]
    config = replace(config, camera_mode=setup["camera_mode"])
    output_dir = Path(output_dir)
    start = time.perf_counter()
    summary = run_sfm(dataset_path(dataset) / setup["subdir"], output_dir, config,
                      progress=progress, log=lambda _: None)
    elapsed = time.perf_counter() - start
    cameras = strecha_cameras(dataset)
    comparison = align_and_compare(read_model(output_dir / "sparse"),
                                   {n: c.C for n, c in cameras.items()},
                                   {n: c.R.T for n, c in cameras.items()})
    comparison.pop("similarity")
    return {
        "benchmark": "reconstruction", "dataset": dataset, "config": asdict(config),
        "registered": summary["num_reg_images"], "num_images": summary["num_input_images"],
        "points3D": summary["num_points3D"],
        "mean_reprojection_error_px": summary["mean_reprojection_error"],
        "median_error_m": comparison["median_error"], "max_error_m": comparison["max_error"],
        "median_error_rel": comparison["median_error_rel"],
        "max_error_rel": comparison["max_error_rel"],
        "median_rotation_error_deg": comparison.get("median_rotation_error_deg"),
        "extent_m": comparison["extent"], "errors_m": comparison["errors"],
        "time_s": elapsed,
    }
