"""`matchlab merge OUTPUT SHARD [SHARD ...]`: join the shard files of one run (`--shard I/N`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, Command, note, print_summary

HELP = "join the shard files written by extract, match or pairs with --shard I/N"
DESCRIPTION = (
    "Join every shard file of one run (features, matches or global descriptors, written with "
    "--shard I/N) into OUTPUT, which then equals what one run without --shard writes. "
    "Shards of different kinds, models, options, numbers of shards or item lists are refused, "
    "as are a shard given twice or not at all, and a shard that lacks some of its items (its "
    "job did not finish; --allow-missing merges the rest). Items already in OUTPUT are "
    "skipped, so an interrupted merge resumes.")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", type=Path, help="merged file (hloc layout); resumed if it exists")
    p.add_argument("shards", type=Path, nargs="+", metavar="SHARD",
                   help="shard files, every shard 0/N ... N-1/N of the run once, in any order")
    p.add_argument("--allow-missing", action="store_true",
                   help="merge although shards lack some of their items (e.g. images no run "
                        "can read), listing them")


def run(args: argparse.Namespace) -> int:
    from ..distributed.shards import merge_shards

    report = merge_shards(args.output, args.shards, allow_missing=args.allow_missing, log=note)
    rows = [("copied", report.copied, ""),
            ("skipped", report.already, f"already in {args.output}" if report.already else "")]
    if report.missing:
        rows.append(("missing", len(report.missing), "in no shard (--allow-missing)"))
    print_summary(f"merge: {len(args.shards)} {report.kind} shards of {report.total} items "
                  f"-> {args.output}", rows)
    return EXIT_OK


COMMAND = Command(HELP, run, arguments, description=DESCRIPTION)
