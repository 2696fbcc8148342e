"""`matchlab match FEATURES PAIRS OUTPUT`: match the pairs of a pairs file into an HDF5 file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import (EXIT_OK, Command, add_batch_size_argument, add_device_argument,
                     add_executor_arguments, add_gravity_argument, add_matcher_arguments,
                     add_precision_argument, add_shard_argument, list_names,
                     make_executor_from_args, parse_conf, print_summary, read_gravity_option,
                     resolve_device, with_precision)
from ..errors import UsageError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", type=Path, help="features file made by `matchlab extract` or hloc")
    p.add_argument("pairs", type=Path,
                   help="text file, one pair per line: 'name0 name1' (names as in the features "
                        "file; blank lines and lines starting with # are ignored)")
    p.add_argument("output", type=Path, help="matches file (hloc layout); resumed if it exists")
    add_matcher_arguments(p)
    add_batch_size_argument(p)
    p.add_argument("--skip-missing", action="store_true",
                   help="report and skip pairs naming an image absent from the features file "
                        "(by default such a pairs file is refused before any matching)")
    p.add_argument("--as-half", action="store_true", help="store scores as float16 (as hloc)")
    add_gravity_argument(p)
    add_precision_argument(p)
    add_device_argument(p)
    add_shard_argument(p, "the pairs (in the order matching visits them)")
    add_executor_arguments(p)


def _read_pairs(path: Path) -> list[tuple[str, str, int]]:
    """(name0, name1, line number) of every pair line; PairsFileError when malformed."""
    from ..retrieval.pairs import read_pairs_file

    try:
        pairs = read_pairs_file(path, with_lines=True)
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read pairs file {path}: {e}") from None
    if not pairs:
        raise UsageError(f"{path} holds no pairs")
    return pairs


def _features_contents(features_path: Path) -> tuple[set[str], str | None]:
    """(image names, extractor name) of a features file; the extractor comes from its record
    (LightGlue's weights depend on it) and is None for files without one (hloc's)."""
    from ..registry import EXTRACTORS
    from ..store import FeatureStore

    with FeatureStore(features_path, mode="r") as features:
        names = set(features.names())
        record = features.file.attrs.get("matchlab_extractor")
    name = json.loads(record).get("name") if record else None
    return names, name if name in EXTRACTORS else None


def run(args: argparse.Namespace) -> int:
    from ..distributed.shards import claim
    from ..pipeline import check_gravity, match_pairs, model_record, visit_order
    from ..registry import load_matcher

    conf = with_precision(parse_conf(args.matcher_conf, "--matcher-conf"), args, "matcher",
                          args.matcher)
    if args.features.resolve() == args.output.resolve():
        raise UsageError("the matches must go to another file than the features")
    pairs = _read_pairs(args.pairs)
    known, extractor = _features_contents(args.features)
    matcher = load_matcher(args.matcher, for_features=extractor, **conf)  # fail early
    missing: dict[str, int] = {}
    for n0, n1, number in pairs:
        for name in (n0, n1):
            if name not in known:
                missing.setdefault(name, number)
    if missing and not args.skip_missing:
        listed = [f"{name!r} (line {line})" for name, line in missing.items()]
        raise UsageError(
            f"{len(missing)} image(s) named in {args.pairs} are not in {args.features}: "
            f"{list_names(listed)}. Extract them first, fix the pairs file, or pass "
            f"--skip-missing to match the other pairs.")
    unique, seen = [], set()
    skipped_missing, duplicates, self_pairs = [], 0, 0
    for n0, n1, number in pairs:
        if n0 in missing or n1 in missing:
            skipped_missing.append(f"line {number}")
        elif n0 == n1:
            self_pairs += 1
        elif (n0, n1) in seen or (n1, n0) in seen:
            duplicates += 1
        else:
            seen.add((n0, n1))
            unique.append((n0, n1))
    gravity = read_gravity_option(args.gravity)
    try:
        check_gravity(matcher, gravity)
    except ValueError as e:
        raise UsageError(f"--gravity: {e}") from None
    if args.shard is not None:  # blocks of the order matching reads the images in
        unique = [unique[i] for i in visit_order(unique)]
    everything, unique = len(unique), claim(args.output, "matches", args.shard, unique)
    device = resolve_device(args.device)
    with make_executor_from_args(args) as executor:
        report = match_pairs(unique, args.features, args.output, matcher.to(device),
                             batch_size=args.batch_size, as_half=args.as_half, device=device,
                             record=model_record(args.matcher, matcher), gravity=gravity,
                             executor=executor)
    rows = [("matched", report.done, f"in {report.seconds:.1f} s, "
                                     f"{report.matches / max(report.done, 1):.0f} matches per pair, "
                                     f"{report.batch_size} pairs a call"),
            ("skipped", report.already, f"already in {args.output}" if report.already else "")]
    if duplicates or self_pairs:
        rows.append(("ignored", duplicates + self_pairs,
                     f"{duplicates} repeated (in either order), {self_pairs} image with itself"))
    if skipped_missing:
        rows.append(("missing", len(skipped_missing),
                     f"image not in {args.features}: {list_names(list(missing), 10)}"))
    if args.shard is not None:
        rows.append(("shard", len(unique), f"{args.shard}: these of the {everything} pairs"))
    print_summary(f"match: {len(pairs)} pair lines in {args.pairs} -> {args.output}", rows)
    return EXIT_OK


COMMAND = Command(
    "match the image pairs of a pairs file into an HDF5 file", run, arguments,
    description="Match each pair of PAIRS using the features in FEATURES, into OUTPUT "
                "(hloc's matches.h5 layout). Pairs already in OUTPUT, in either order, are "
                "skipped, so an interrupted run resumes.")
