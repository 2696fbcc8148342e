"""`matchlab pairs`: write a pairs file (exhaustive, sequential, retrieval, sequential+retrieval).

    matchlab pairs pairs.txt --descriptors global.h5 --pairs retrieval:20       # hloc's input
    matchlab pairs pairs.txt --image-dir images --descriptors global.h5 \\
        --pairs retrieval:20 --global mixvpr --weights MixVPR.ckpt   # compute, then select
    matchlab pairs pairs.txt --image-dir images --features features.h5 \\
        --descriptors global.h5 --pairs sequential:5+retrieval:10 --global vlad # video
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import (EXIT_OK, Command, add_executor_arguments, add_shard_argument, image_names,
                     make_executor_from_args)
from ..errors import UsageError

HELP = "select image pairs (exhaustive, sequential, retrieval) into a pairs file"
DESCRIPTION = (
    "Write the pairs of SPEC (--pairs) into OUTPUT (one 'name0 name1' per line, hloc's format, "
    "each pair once in either order). retrieval:K pairs every image with its K most similar "
    "images by global descriptor, from --descriptors (an hloc global-descriptor file); with "
    "--image-dir, images missing from that file are computed into it first (resumable): "
    "MixVPR (--global mixvpr, --weights PATH) or VLAD of the local features in --features "
    "(--global vlad; auto = mixvpr if a checkpoint is found, else vlad). Top-K runs in chunks, "
    "so 100,000 images never build an N x N matrix.")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", type=Path, help="pairs file to write")
    p.add_argument("--pairs", default="retrieval:20", metavar="SPEC",
                   help="exhaustive | sequential:N | retrieval:K | sequential:N+retrieval:K")
    p.add_argument("--descriptors", type=Path, default=None,
                   help="global descriptors (hloc layout); names = its images unless "
                        "--image-dir is given (default with --image-dir: "
                        "OUTPUT's folder/global.h5)")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="image folder: its images are the names, and missing global "
                        "descriptors are computed")
    p.add_argument("--global", dest="global_descriptor", default="auto",
                   choices=["auto", "mixvpr", "vlad"], help="global descriptor to compute")
    p.add_argument("--weights", type=Path, default=None, help="MixVPR checkpoint (.ckpt)")
    p.add_argument("--features", type=Path, default=None,
                   help="local features file (for --global vlad)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop retrieval pairs with a lower similarity (hloc uses 0; do not "
                        "with VLAD, whose similarities are centred on 0)")
    p.add_argument("--query-prefix", nargs="+", default=None, help="query names start with")
    p.add_argument("--query-list", type=Path, default=None, help="file of query names")
    p.add_argument("--db-prefix", nargs="+", default=None, help="database names start with")
    p.add_argument("--db-list", type=Path, default=None, help="file of database names")
    add_shard_argument(p, "the global descriptors of --image-dir (into --descriptors; no "
                          "pairs are written: merge the shards, then select from the merged "
                          "file)")
    add_executor_arguments(p)  # where MixVPR runs


def _names_and_descriptors(args: argparse.Namespace, needs_global: bool):
    """(image names or None for all of --descriptors, descriptors file, what was computed)."""
    from ..distributed.shards import claim
    from ..retrieval.select import compute_global_descriptors

    if args.shard is not None and (not needs_global or args.image_dir is None
                                   or args.descriptors is None):
        raise UsageError("--shard splits the computation of global descriptors: give "
                         "--image-dir, a --descriptors file of its own for this shard, and a "
                         "--pairs spec with retrieval:K")
    if args.image_dir is None:
        if args.descriptors is None:
            raise UsageError("give --descriptors (an hloc global-descriptor file) or --image-dir")
        if not args.descriptors.is_file():
            raise UsageError(f"global descriptor file not found: {args.descriptors}")
        return None, args.descriptors, None
    names = image_names(args.image_dir)
    if not needs_global:
        return names, None, None
    path = args.descriptors or args.output.parent / "global.h5"
    method = args.global_descriptor
    if args.weights is not None:
        if method == "vlad":
            raise UsageError("--weights is a MixVPR checkpoint; it makes no sense with "
                             "--global vlad")
        method = f"mixvpr:{args.weights}"
    mine = claim(path, "global", args.shard, names)
    try:
        with make_executor_from_args(args) as executor:
            computed = compute_global_descriptors(
                mine, image_dir=args.image_dir, output=path, method=method, fit_names=names,
                features=args.features, progress=True, log=lambda m: print(m, file=sys.stderr),
                executor=executor)
    except (FileNotFoundError, ValueError) as e:  # no features file, too few descriptors
        raise UsageError(str(e)) from None
    if args.shard is not None:  # again: descriptors made otherwise were deleted, record too
        claim(path, "global", args.shard, names)
    return mine, path, computed


def run(args: argparse.Namespace) -> int:
    from ..retrieval.pairs import dedupe_pairs, parse_pairs_spec, spec_part_pairs, write_pairs_file
    from ..retrieval.select import read_global_descriptors, retrieval_pairs

    start = time.perf_counter()
    parts = parse_pairs_spec(args.pairs)
    if parts[0][0] == "file":
        raise UsageError("--pairs file:PATH is already a pairs file; nothing to select")
    needs_global = any(kind == "retrieval" for kind, _ in parts)
    names, descriptors_path, computed = _names_and_descriptors(args, needs_global)
    if args.shard is not None:
        print(f"pairs: global {computed['method']} descriptors of shard {args.shard} "
              f"({len(names)} images: computed {computed['done']}, already there "
              f"{computed['already']}) -> {descriptors_path}; no pairs written. Join the "
              f"shards with `matchlab merge global.h5 SHARD...`, then run `matchlab pairs` "
              f"with --descriptors global.h5")
        return EXIT_OK
    descriptors = None
    if needs_global or names is None:
        try:
            names, descriptors = read_global_descriptors(descriptors_path, names,
                                                         half=None if needs_global else True)
        except (KeyError, ValueError) as e:
            raise UsageError(f"{descriptors_path}: {e}") from None
    pairs, counts = [], []
    for kind, arg in parts:
        if kind != "retrieval":
            new = spec_part_pairs(kind, arg, names)
        else:
            try:
                new = retrieval_pairs(names, descriptors, arg, min_score=args.min_score,
                                      query_prefix=_prefix(args.query_prefix),
                                      query_list=args.query_list,
                                      db_prefix=_prefix(args.db_prefix), db_list=args.db_list)
            except ValueError as e:
                raise UsageError(str(e)) from None
        counts.append((f"{kind}:{arg}" if arg is not None else kind, len(new)))
        pairs += new
    pairs = dedupe_pairs(pairs)
    write_pairs_file(args.output, pairs)
    print(f"pairs: {len(names)} images -> {args.output}")
    if computed is not None:
        print(f"  global {computed['method']:<8} computed {computed['done']}, already there "
              f"{computed['already']} ({descriptors_path})")
    for label, count in counts:
        print(f"  {label:<16} {count:>8} pairs")
    print(f"  {'written':<16} {len(pairs):>8} unique pairs in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _prefix(values):
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


COMMAND = Command(HELP, run, arguments, description=DESCRIPTION)
