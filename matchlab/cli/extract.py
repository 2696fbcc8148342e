"""`matchlab extract IMAGE_DIR OUTPUT`: local features of every image into an HDF5 file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..extractors import DEFAULT_MAX_KEYPOINTS
from .common import (EXIT_ERROR, EXIT_OK, Command, add_device_argument, add_executor_arguments,
                     add_extractor_arguments, add_precision_argument, add_shard_argument,
                     image_names, list_names, make_executor_from_args, note, parse_conf,
                     print_summary, resolve_device, with_precision)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_dir", type=Path, help="folder of images (searched recursively)")
    p.add_argument("output", type=Path, help="features file (hloc layout); resumed if it exists")
    add_extractor_arguments(p, max_keypoints=DEFAULT_MAX_KEYPOINTS)
    p.add_argument("--resize", type=int, default=1024,
                   help="resize so that the long side is at most N px (0: keep the size); "
                        "keypoints are always stored in original-image pixels")
    p.add_argument("--as-half", action="store_true",
                   help="store descriptors and scores as float16 (half the file size)")
    add_precision_argument(p)
    add_device_argument(p)
    add_shard_argument(p, "the images (in name order)")
    add_executor_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when no image could be read (nothing is in OUTPUT)."""
    from ..distributed.shards import claim
    from ..pipeline import extract_features, model_record
    from ..registry import load_extractor

    conf = with_precision(parse_conf(args.extractor_conf, "--extractor-conf"), args,
                          "extractor", args.features)
    conf["resize"] = None if args.resize == 0 else args.resize
    if args.max_keypoints is not None:
        conf["max_keypoints"] = args.max_keypoints
    everything = image_names(args.image_dir)
    extractor = load_extractor(args.features, **conf)  # bad options fail before any work
    names = claim(args.output, "features", args.shard, everything)
    extractor = extractor.to(resolve_device(args.device))
    with make_executor_from_args(args) as executor:
        report = extract_features(args.image_dir, names, args.output, extractor,
                                  as_half=args.as_half, log=note,
                                  record=model_record(args.features, extractor),
                                  executor=executor)
    failed = [f"{n} ({r})" for n, r in report.failed.items()]
    rows = [("extracted", report.done, f"in {report.seconds:.1f} s"),
            ("skipped", report.already, f"already in {args.output}" if report.already else ""),
            ("failed", len(failed), list_names(failed, 20))]
    shard = f" (shard {args.shard}: {len(names)} of {len(everything)})" if args.shard else ""
    print_summary(f"extract: {len(names)} images in {args.image_dir}{shard} -> {args.output}",
                  rows)
    if failed:
        print(f"  the failed images are not in {args.output}; fix or remove them and run the "
              f"same command again to add them", file=sys.stderr)
    if names and len(failed) == len(names):
        print(f"matchlab: error: none of the {len(names)} images in {args.image_dir} could be "
              f"read", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


COMMAND = Command(
    "extract local features of every image in a folder into an HDF5 file", run, arguments,
    description="Extract local features of every image below IMAGE_DIR into OUTPUT "
                "(hloc's features.h5 layout). Images already in OUTPUT are skipped, so an "
                "interrupted run resumes; unreadable images are reported and skipped.")
