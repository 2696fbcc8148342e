"""`matchlab localize SFM_DIR QUERY_DIR OUT_DIR`: new images against a `matchlab sfm` model."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (EXIT_ERROR, EXIT_OK, Command, RegistryNames, add_device_argument,
                     image_names, output_folder, parse_conf, resolve_device)

DESCRIPTION = (
    "Find the camera pose of each image of QUERY_DIR in the model of SFM_DIR (an output "
    "folder of `matchlab sfm`): features with the model's extractor, the --k most similar "
    "model images by the model's global descriptor (all of them when the model has no more "
    "than --k), matches with the model's matcher, 2D-3D correspondences through the model's "
    "tracks, pycolmap's robust absolute pose + refinement. Writes OUT_DIR/poses.txt (hloc: "
    "'name qw qx qy qz tx ty tz', world-to-camera) and OUT_DIR/localization.json (per query: "
    "status, reason, inliers, 2D-3D correspondences, model images used, seconds) and "
    "OUT_DIR/report.html (inlier matches, the queries in the model's top view). A query "
    "that cannot be localized is listed with the reason and gets no pose; an unreadable "
    "image is skipped and named. Re-running resumes: queries with a result are not redone.")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sfm_dir", type=Path, help="output folder of `matchlab sfm`")
    p.add_argument("query_dir", type=Path, help="folder of query images (searched recursively)")
    p.add_argument("out_dir", type=Path,
                   help="poses.txt, localization.json, report.html + plots/, features.h5 of "
                        "the queries")
    p.add_argument("--k", type=int, default=10, help="model images matched per query")
    p.add_argument("--global", dest="global_descriptor", default="auto",
                   help="global descriptor: auto (the model's own global.h5, else VLAD of its "
                        "features), vlad or mixvpr (must be the model's)")
    p.add_argument("--query-cameras", type=Path, default=None, metavar="FILE",
                   help="known intrinsics, hloc's 'name MODEL WIDTH HEIGHT params...' lines; "
                        "other queries: EXIF focal or COLMAP's prior, refined")
    p.add_argument("--matcher", default=None, choices=RegistryNames("matcher"), metavar="NAME",
                   help="matcher (default: the one the model was matched with)")
    p.add_argument("--matcher-conf", nargs="+", metavar="KEY=VALUE", help="matcher options")
    p.add_argument("--features", default=None, choices=RegistryNames("extractor"),
                   metavar="NAME", help="extractor, only for a features.h5 that does not record "
                                        "its own (not written by matchlab)")
    p.add_argument("--extractor-conf", nargs="+", metavar="KEY=VALUE",
                   help="extractor options, idem")
    p.add_argument("--max-error", type=float, default=12.0,
                   help="RANSAC inlier threshold (reprojection error, px)")
    p.add_argument("--min-inliers", type=int, default=30,
                   help="fewer pose inliers: not localized")
    p.add_argument("--min-inlier-ratio", type=float, default=0.25,
                   help="fewer inliers per 2D-3D correspondence: not localized")
    p.add_argument("--sequential", type=int, default=0, metavar="N",
                   help="the queries are video frames (sorted names): also match each to its "
                        "N previous localized frames, through their pose inliers")
    add_device_argument(p)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when no query was localized."""
    from ..sfm.absolute_pose import PoseOptions
    from ..sfm.localization import localize

    names = image_names(args.query_dir)
    output_folder(args.out_dir, "OUT_DIR")
    result = localize(
        args.sfm_dir, args.query_dir, args.out_dir, names=names, k=args.k,
        global_descriptor=args.global_descriptor, query_cameras=args.query_cameras,
        features=args.features,
        extractor_conf=parse_conf(args.extractor_conf, "--extractor-conf") or None,
        matcher=args.matcher, matcher_conf=parse_conf(args.matcher_conf, "--matcher-conf") or None,
        options=PoseOptions(max_error=args.max_error, min_inliers=args.min_inliers,
                            min_inlier_ratio=args.min_inlier_ratio),
        sequential=args.sequential,
        device=resolve_device(args.device), log=lambda line: print(line, flush=True))
    return EXIT_OK if result.poses else EXIT_ERROR


COMMAND = Command("localize new images against a `matchlab sfm` model (hloc poses file)",
                  run, arguments, description=DESCRIPTION)
