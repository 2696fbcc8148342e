"""`matchlab sfm IMAGE_DIR OUTPUT_DIR`: features, pairs, matches, COLMAP database, sparse model."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..extractors import DEFAULT_MAX_KEYPOINTS
from .common import (EXIT_ERROR, EXIT_OK, Command, add_batch_size_argument,
                     add_device_argument, add_executor_arguments, add_extractor_arguments,
                     add_gravity_argument, add_matcher_arguments, add_precision_argument,
                     image_names, make_executor_from_args, output_folder, parse_conf, read_gravity_option, resolve_device,
                     with_precision)
from ..errors import UsageError

# the rule of matchlab.sfm.reconstruction.AUTO_MAPPER_RULE, in words (a test keeps them equal)
AUTO_HELP = "incremental from 1 to 50 images, global above 50"


def arguments(p: argparse.ArgumentParser) -> None:
    from ..retrieval.pairs import SPEC_FORMS  # a light module: the spec grammar

    p.add_argument("image_dir", type=Path, metavar="IMAGE_DIR",
                   help="folder of images (searched recursively); with --extend: SFM_DIR, "
                        "the output folder of an earlier `matchlab sfm`")
    p.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR",
                   help="features.h5, pairs.txt, matches.h5, database.db, sparse/ (COLMAP binary), "
                        "sparse_text/, points3D.ply, summary.json, report.html, plots/; with "
                        "--extend: NEW_IMAGES, the folder of the images to add")
    p.add_argument("--extend", action="store_true",
                   help="`matchlab sfm --extend SFM_DIR NEW_IMAGES`: add the new images to the "
                        "model in SFM_DIR (updated in place, the previous model kept as "
                        "sparse_before_extend/), with the model's features, matcher and options; "
                        "--pairs (default: the model's), --mapper-options, --gravity, --device, "
                        "--plots apply")
    p.set_defaults(_sfm_parser=p)  # --extend tells the options given from the defaults
    add_extractor_arguments(p, max_keypoints=DEFAULT_MAX_KEYPOINTS)
    add_matcher_arguments(p)
    add_batch_size_argument(p)
    p.add_argument("--resize", type=int, default=1024,
                   help="resize so that the long side is at most N px (0: keep the size)")
    p.add_argument("--pairs", default="exhaustive", metavar="SPEC", help=SPEC_FORMS)
    p.add_argument("--global", dest="global_descriptor", default="auto",
                   help="global descriptor for retrieval pairs: auto, mixvpr or vlad")
    p.add_argument("--mapper", default="incremental",
                   choices=("incremental", "global", "hierarchical", "auto"),
                   help="COLMAP's incremental mapper, the global one (GLOMAP), the "
                        "hierarchical one (clusters mapped incrementally, then merged), or "
                        f"auto: {AUTO_HELP}")
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model")
    p.add_argument("--camera-params", metavar="P1,P2,...",
                   help="known intrinsics of --camera-model in COLMAP's order and in pixels of "
                        "the original images (e.g. PINHOLE: fx,fy,cx,cy); every mapper "
                        "holds them fixed")
    p.add_argument("--camera-mode", default="auto",
                   choices=("auto", "single", "per_folder", "per_image"),
                   help="which images share intrinsics")
    p.add_argument("--mapper-options", nargs="+", metavar="KEY=VALUE",
                   help="pycolmap pipeline options (dotted or flat keys), e.g. "
                        "mapper.abs_pose_min_num_inliers=15 num_threads=-1")
    p.add_argument("--verify-options", nargs="+", metavar="KEY=VALUE",
                   help="pycolmap TwoViewGeometryOptions for the geometric verification, "
                        "e.g. ransac.max_num_trials=5000 (default: 20000 trials, minimum "
                        "inlier ratio 0.1, seed 0)")
    p.add_argument("--verify-budget", action="store_true",
                   help="give a pair with M matches at most the RANSAC trials for an inlier "
                        "ratio of min_num_inliers / M, and send no pair with fewer matches "
                        "than min_num_inliers to RANSAC (same inliers, no time saved on the "
                        "measured scenes: docs/usage.md)")
    add_gravity_argument(p)
    p.add_argument("--plots", type=int, default=3,
                   help="match plots of the N pairs with the most verified matches")
    add_precision_argument(p)
    add_device_argument(p)
    add_executor_arguments(p)


def _check_pairs_spec(args: argparse.Namespace) -> None:
    """A bad --pairs spec, a missing pairs file or an unknown --global: a clear error."""
    from ..retrieval.pairs import parse_pairs_spec
    from ..retrieval.select import resolve_global_method

    parts = parse_pairs_spec(args.pairs)
    if parts[0][0] == "file" and not Path(parts[0][1]).is_file():
        raise UsageError(f"--pairs {args.pairs}: pairs file not found")
    if any(kind == "retrieval" for kind, _ in parts) and not args.extend:
        resolve_global_method(args.global_descriptor)


def _check_before_work(args: argparse.Namespace) -> None:
    """The mistakes that would otherwise surface only after extraction: a bad pairs spec or
    pairs file, an unknown global descriptor or camera model, a bad gravity file, no images."""
    import pycolmap

    _check_pairs_spec(args)
    models = sorted(m for m in pycolmap.CameraModelId.__members__ if m != "INVALID")
    if args.camera_model not in models:
        raise UsageError(f"unknown --camera-model {args.camera_model!r}; COLMAP's: "
                         f"{', '.join(models)}")
    if args.camera_params is not None:
        expected = pycolmap.Camera(model=args.camera_model, width=1, height=1).params_info
        if len(_camera_params(args.camera_params)) != len(expected.split(",")):
            raise UsageError(f"--camera-params {args.camera_params}: {args.camera_model} "
                             f"takes {expected}")
    read_gravity_option(args.gravity)
    image_names(args.image_dir)


def _camera_params(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--camera-params {text}: expected comma-separated numbers") from None


def _run_extend(args: argparse.Namespace) -> int:
    """`--extend SFM_DIR NEW_IMAGES`: options left at their defaults are the model's; others
    must equal the model's (`sfm.extend.check_options`), except the ones that --extend uses."""
    from ..sfm.extend import check_options, extend_sfm, model_config

    if args.executor != "local":
        raise UsageError("--extend runs with the local executor only")
    parser = args._sfm_parser
    given = {dest: getattr(args, dest) for dest in (
        "features", "matcher", "resize", "max_keypoints", "camera_model", "camera_mode",
        "global_descriptor", "mapper") if getattr(args, dest) != parser.get_default(dest)}
    if "resize" in given and given["resize"] == 0:
        given["resize"] = None
    for dest, option in (("extractor_conf", "--extractor-conf"),
                         ("matcher_conf", "--matcher-conf")):
        if getattr(args, dest):
            given[dest] = parse_conf(getattr(args, dest), option)
    check_options(model_config(args.image_dir)[0], given)  # before looking at the images
    read_gravity_option(args.gravity)
    image_names(args.output_dir)
    pairs = args.pairs if args.pairs != parser.get_default("pairs") else None
    if pairs is not None:
        _check_pairs_spec(args)
    summary = extend_sfm(args.image_dir, args.output_dir, pairs=pairs, given=given,
                         mapper_options=parse_conf(args.mapper_options, "--mapper-options"),
                         gravity_file=str(args.gravity) if args.gravity else None,
                         device=resolve_device(args.device), plots=args.plots,
                         log=lambda line: print(line, flush=True))
    print(f"model in {args.image_dir} (report: {args.image_dir / 'report.html'})")
    return EXIT_OK if summary["num_reg_images"] > 0 else EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when no image was registered (fewer than two readable images is a
    `ReconstructionError`)."""
    from ..pipeline import SfMConfig, run_sfm

    if args.extend:
        return _run_extend(args)
    config = SfMConfig(
        features=args.features, matcher=args.matcher, pairs=args.pairs, mapper=args.mapper,
        resize=None if args.resize == 0 else args.resize, camera_model=args.camera_model,
        camera_params=_camera_params(args.camera_params), camera_mode=args.camera_mode,
        global_descriptor=args.global_descriptor,
        matcher_conf=with_precision(parse_conf(args.matcher_conf, "--matcher-conf"), args,
                                    "matcher", args.matcher),
        extractor_conf=with_precision(parse_conf(args.extractor_conf, "--extractor-conf"), args,
                                      "extractor", args.features),
        mapper_options=parse_conf(args.mapper_options, "--mapper-options"),
        verify_options=parse_conf(args.verify_options, "--verify-options"),
        verify_budget=args.verify_budget, batch_size=args.batch_size,
        gravity_file=str(args.gravity) if args.gravity else None)
    if args.max_keypoints is not None:
        config.max_keypoints = args.max_keypoints
    _check_before_work(args)
    output_folder(args.output_dir, "OUTPUT_DIR")
    with make_executor_from_args(args) as executor:
        summary = run_sfm(args.image_dir, args.output_dir, config,
                          device=resolve_device(args.device), plots=args.plots,
                          log=lambda line: print(line, flush=True), executor=executor)
    print(f"outputs in {args.output_dir} (report: {args.output_dir / 'report.html'})")
    return EXIT_OK if summary["num_reg_images"] > 0 else EXIT_ERROR


COMMAND = Command(
    "image folder -> features, pairs, matches, COLMAP database and sparse model", run, arguments,
    description="Reconstruct IMAGE_DIR into OUTPUT_DIR: extract -> pairs -> match -> "
                "database -> verify -> map. Every stage resumes: re-running the same "
                "command after an interruption redoes nothing that was finished. Bad images "
                "and byte-identical duplicates are reported and skipped. "
                "`matchlab sfm --extend SFM_DIR NEW_IMAGES` adds new images to an existing "
                "model without redoing the old ones.")
