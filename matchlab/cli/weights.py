"""`matchlab weights list|fetch|verify`: the pretrained weight files and their cache."""
from __future__ import annotations

import argparse
import sys

from .common import EXIT_ERROR, EXIT_OK, Command
from ..errors import UsageError


def _list(args: argparse.Namespace) -> int:
    from ..weights import WEIGHTS, cache_dir, verify_cached

    status = verify_cached()
    print(f"weight files (cache: {cache_dir()})")
    width = max(len(n) for n in WEIGHTS)
    for name, spec in sorted(WEIGHTS.items()):
        size = f"{spec.size / 1e6:6.1f} MB" if spec.size else "      ? MB"
        print(f"  {name:<{width}}  {size}  {status[name]:<7}  {spec.license}")
    return EXIT_OK


def _fetch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="registered weight file names")
    p.add_argument("--all", action="store_true", help="fetch every registered file")


def _fetch(args: argparse.Namespace) -> int:
    """Exit status 1 when any file could not be obtained (each failure is printed)."""
    from ..weights import WEIGHTS, WeightsError, weights_path

    if args.all == bool(args.names):
        raise UsageError("give weight file names or --all (see `matchlab weights list`)")
    names = sorted(WEIGHTS) if args.all else args.names
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise UsageError(f"unknown weight file(s) {unknown}; registered: "
                         f"{', '.join(sorted(WEIGHTS))}")
    failures = 0
    for name in names:
        try:
            print(f"{name}: {weights_path(name)}")
        except WeightsError as e:
            failures += 1
            print(f"{name}: FAILED\n{e}", file=sys.stderr)
    return EXIT_ERROR if failures else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    """Exit status 1 when a cached file is corrupt (missing files are fine)."""
    from ..weights import cache_dir, verify_cached

    status = verify_cached()
    print(f"cache: {cache_dir()}")
    for name, state in sorted(status.items()):
        print(f"  {state:<7}  {name}")
    corrupt = [n for n, s in status.items() if s == "corrupt"]
    if corrupt:
        print(f"corrupt: {', '.join(corrupt)}; `matchlab weights fetch NAME` replaces them",
              file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


COMMAND = Command("list, fetch or verify pretrained weight files", subcommands={
    "list": Command("registered weight files and their cache status", _list),
    "fetch": Command("download / copy weight files into the cache, verified",
                     _fetch, _fetch_arguments),
    "verify": Command("check the sha256 of every cached weight file", _verify),
})
