"""`matchlab triangulate IMAGE_DIR POSES OUT_DIR`: 3D points from known camera poses."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..extractors import DEFAULT_MAX_KEYPOINTS
from .common import (EXIT_ERROR, EXIT_OK, Command, add_device_argument, add_extractor_arguments,
                     add_gravity_argument, add_matcher_arguments, image_names, output_folder,
                     parse_conf, read_gravity_option, resolve_device)

DESCRIPTION = (
    "Triangulate the images of IMAGE_DIR whose camera poses are known (SLAM, ARKit, a rig, "
    "another model). POSES is a COLMAP model folder (cameras + images, binary or text; "
    "points not needed) or a poses file, hloc's 'name qw qx qy qz tx ty tz' lines "
    "(world-to-camera), given with --cameras. Features, pairs and matches are made as by "
    "`matchlab sfm` (same options, same files, resumable), verified the same way, then "
    "pycolmap's point triangulator makes the 3D points with the poses and intrinsics held "
    "fixed (--refine: then a bundle adjustment of poses and points). Images without a pose "
    "are named and skipped; an image of POSES missing from IMAGE_DIR is an error. OUT_DIR is "
    "laid out as `matchlab sfm`'s.")


def arguments(p: argparse.ArgumentParser) -> None:
    from ..retrieval.pairs import POSE_SPEC_FORMS, SPEC_FORMS
    from ..sfm.triangulation import DEFAULT_PAIRS

    p.add_argument("image_dir", type=Path, help="folder of images (searched recursively)")
    p.add_argument("poses", type=Path,
                   help="COLMAP model folder, or poses file ('name qw qx qy qz tx ty tz', "
                        "world-to-camera) with --cameras")
    p.add_argument("out_dir", type=Path,
                   help="features.h5, pairs.txt, matches.h5, database.db, sparse/, "
                        "sparse_text/, points3D.ply, summary.json, report.html, plots/")
    p.add_argument("--cameras", type=Path, default=None, metavar="FILE",
                   help="intrinsics for a poses file: hloc's 'name MODEL WIDTH HEIGHT "
                        "params...' lines, one per image, at the image's size")
    add_extractor_arguments(p, max_keypoints=DEFAULT_MAX_KEYPOINTS)
    add_matcher_arguments(p)
    p.add_argument("--resize", type=int, default=1024,
                   help="resize so that the long side is at most N px (0: keep the size)")
    p.add_argument("--pairs", default=DEFAULT_PAIRS, metavar="SPEC",
                   help=f"{SPEC_FORMS} | {POSE_SPEC_FORMS} (K nearest camera centres; "
                        f"covisible: among cameras looking within 60 degrees of each other)")
    p.add_argument("--global", dest="global_descriptor", default="auto",
                   help="global descriptor for retrieval pairs: auto, mixvpr or vlad")
    p.add_argument("--refine", action="store_true",
                   help="after triangulating, refine the poses with the points (bundle "
                        "adjustment; intrinsics stay fixed)")
    p.add_argument("--mapper-options", nargs="+", metavar="KEY=VALUE",
                   help="pycolmap pipeline options of the triangulator, e.g. "
                        "mapper.filter_max_reproj_error=2 triangulation.min_angle=3")
    add_gravity_argument(p)
    p.add_argument("--plots", type=int, default=3,
                   help="match plots of the N pairs with the most verified matches")
    add_device_argument(p)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when no 3D point was made."""
    from ..pipeline import SfMConfig
    from ..sfm.poses import read_known_poses
    from ..sfm.triangulation import triangulate

    config = SfMConfig(
        features=args.features, matcher=args.matcher, pairs=args.pairs,
        resize=None if args.resize == 0 else args.resize,
        global_descriptor=args.global_descriptor,
        matcher_conf=parse_conf(args.matcher_conf, "--matcher-conf"),
        extractor_conf=parse_conf(args.extractor_conf, "--extractor-conf"),
        mapper_options=parse_conf(args.mapper_options, "--mapper-options"),
        gravity_file=str(args.gravity) if args.gravity else None)
    if args.max_keypoints is not None:
        config.max_keypoints = args.max_keypoints
    read_gravity_option(args.gravity)
    image_names(args.image_dir)
    read_known_poses(args.poses, args.cameras)  # a bad file fails before OUT_DIR is made
    output_folder(args.out_dir, "OUT_DIR")
    result = triangulate(args.image_dir, args.poses, args.out_dir, cameras=args.cameras,
                         config=config, refine=args.refine, device=resolve_device(args.device),
                         plots=args.plots, log=lambda line: print(line, flush=True))
    print(f"outputs in {args.out_dir} (report: {args.out_dir / 'report.html'})")
    return EXIT_OK if result.summary["num_points3D"] > 0 else EXIT_ERROR


COMMAND = Command("3D points from known camera poses (COLMAP model or hloc poses file)",
                  run, arguments, description=DESCRIPTION)
