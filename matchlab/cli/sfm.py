"""`matchlab sfm IMAGE_DIR OUTPUT_DIR`: features, pairs, matches, COLMAP database, sparse model."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..extractors import DEFAULT_MAX_KEYPOINTS
from .common import (EXIT_ERROR, EXIT_OK, Command, add_device_argument, add_extractor_arguments,
                     add_gravity_argument, add_matcher_arguments, add_precision_argument,
                     image_names, output_folder, parse_conf, read_gravity_option,
                     resolve_device, with_precision)
from ..errors import UsageError


def arguments(p: argparse.ArgumentParser) -> None:
    from ..retrieval.pairs import SPEC_FORMS  # a light module: the spec grammar

    p.add_argument("image_dir", type=Path, help="folder of images (searched recursively)")
    p.add_argument("output_dir", type=Path,
                   help="features.h5, pairs.txt, matches.h5, database.db, sparse/ (COLMAP binary), "
                        "sparse_text/, points3D.ply, summary.json, report.html, plots/")
    add_extractor_arguments(p, max_keypoints=DEFAULT_MAX_KEYPOINTS)
    add_matcher_arguments(p)
    p.add_argument("--resize", type=int, default=1024,
                   help="resize so that the long side is at most N px (0: keep the size)")
    p.add_argument("--pairs", default="exhaustive", metavar="SPEC", help=SPEC_FORMS)
    p.add_argument("--global", dest="global_descriptor", default="auto",
                   help="global descriptor for retrieval pairs: auto, mixvpr or vlad")
    p.add_argument("--mapper", default="incremental", choices=("incremental", "global"))
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model")
    p.add_argument("--camera-mode", default="auto",
                   choices=("auto", "single", "per_folder", "per_image"),
                   help="which images share intrinsics")
    p.add_argument("--mapper-options", nargs="+", metavar="KEY=VALUE",
                   help="pycolmap pipeline options (dotted or flat keys), e.g. "
                        "mapper.abs_pose_min_num_inliers=15 num_threads=-1")
    add_gravity_argument(p)
    p.add_argument("--plots", type=int, default=3,
                   help="match plots of the N pairs with the most verified matches")
    add_precision_argument(p)
    add_device_argument(p)


def _check_before_work(args: argparse.Namespace) -> None:
    """The mistakes that would otherwise surface only after extraction: a bad pairs spec or
    pairs file, an unknown global descriptor or camera model, a bad gravity file, no images."""
    import pycolmap

    from ..retrieval.pairs import parse_pairs_spec
    from ..retrieval.select import resolve_global_method

    parts = parse_pairs_spec(args.pairs)
    if parts[0][0] == "file" and not Path(parts[0][1]).is_file():
        raise UsageError(f"--pairs {args.pairs}: pairs file not found")
    if any(kind == "retrieval" for kind, _ in parts):
        resolve_global_method(args.global_descriptor)
    models = sorted(m for m in pycolmap.CameraModelId.__members__ if m != "INVALID")
    if args.camera_model not in models:
        raise UsageError(f"unknown --camera-model {args.camera_model!r}; COLMAP's: "
                         f"{', '.join(models)}")
    read_gravity_option(args.gravity)
    image_names(args.image_dir)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when no image was registered (fewer than two readable images is a
    `ReconstructionError`)."""
    from ..pipeline import SfMConfig, run_sfm

    config = SfMConfig(
        features=args.features, matcher=args.matcher, pairs=args.pairs, mapper=args.mapper,
        resize=None if args.resize == 0 else args.resize, camera_model=args.camera_model,
        camera_mode=args.camera_mode, global_descriptor=args.global_descriptor,
        matcher_conf=with_precision(parse_conf(args.matcher_conf, "--matcher-conf"), args,
                                    "matcher", args.matcher),
        extractor_conf=with_precision(parse_conf(args.extractor_conf, "--extractor-conf"), args,
                                      "extractor", args.features),
        mapper_options=parse_conf(args.mapper_options, "--mapper-options"),
        gravity_file=str(args.gravity) if args.gravity else None)
    if args.max_keypoints is not None:
        config.max_keypoints = args.max_keypoints
    _check_before_work(args)
    output_folder(args.output_dir, "OUTPUT_DIR")
    summary = run_sfm(args.image_dir, args.output_dir, config, device=resolve_device(args.device),
                      plots=args.plots, log=lambda line: print(line, flush=True))
    print(f"outputs in {args.output_dir} (report: {args.output_dir / 'report.html'})")
    return EXIT_OK if summary["num_reg_images"] > 0 else EXIT_ERROR


COMMAND = Command(
    "image folder -> features, pairs, matches, COLMAP database and sparse model", run, arguments,
    description="Reconstruct IMAGE_DIR into OUTPUT_DIR: extract -> pairs -> match -> "
                "database -> verify -> map. Every stage resumes: re-running the same "
                "command after an interruption redoes nothing that was finished. Bad images "
                "and byte-identical duplicates are reported and skipped.")
