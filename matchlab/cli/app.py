"""The `matchlab` command: the table of subcommands, the parser built from it, and `main`.

Every command that writes an HDF5 file resumes: what the output already holds is skipped, so
re-running a command after an interruption (Ctrl-C, a killed job, a crash) finishes the work.
Each subcommand lives in its own module (`COMMAND`: help, handler, arguments); this module
assembles them and is imported by none of them.
"""
from __future__ import annotations

import argparse
import sys

from . import (datasets, demo, evaluate, extract, localize, match, merge, pairs, salvage, sfm,
               triangulate, weights)
from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_STATUS_HELP, EXIT_USAGE, Command, HelpFormatter
from ..errors import MatchlabError

COMMANDS: dict[str, Command] = {
    "extract": extract.COMMAND,
    "match": match.COMMAND,
    "pairs": pairs.COMMAND,
    "sfm": sfm.COMMAND,
    "localize": localize.COMMAND,
    "triangulate": triangulate.COMMAND,
    "eval": evaluate.COMMAND,
    "weights": weights.COMMAND,
    "datasets": datasets.COMMAND,
    "demo": demo.COMMAND,
    "salvage": salvage.COMMAND,
    "merge": merge.COMMAND,
}


def _add_commands(parser: argparse.ArgumentParser, commands: dict[str, Command],
                  dest: str) -> None:
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND")
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.description or
                           command.help, formatter_class=HelpFormatter, epilog=EXIT_STATUS_HELP)
        if command.arguments:
            command.arguments(p)
        if command.subcommands:
            _add_commands(p, command.subcommands, dest=f"{dest}_{name}")
            p.set_defaults(_parser=p)
        else:
            p.set_defaults(_run=command.run)


def build_parser() -> argparse.ArgumentParser:
    """The `matchlab` parser; building it imports no model code (see `common.RegistryNames`)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="matchlab", formatter_class=HelpFormatter, epilog=EXIT_STATUS_HELP,
        description="Local feature extraction and matching into hloc-compatible HDF5 files.")
    parser.add_argument("--version", action="version", version=f"matchlab {__version__}")
    _add_commands(parser, COMMANDS, "command")
    parser.set_defaults(_parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see `common.EXIT_STATUS_HELP`).

    A `MatchlabError` (a problem with the user's input, options or files) is printed as one
    line; any other exception is a bug and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:  # a command group without its action, or nothing at all
        args._parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("\nmatchlab: interrupted; what was finished is saved, run the same command again "
              "to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MatchlabError as e:
        print(f"matchlab: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def console() -> int:
    """The `matchlab` command: `main` in a process of its own, whose allocator keeps freed
    memory for reuse (`matchlab.memory.reuse_freed_memory`: faster networks)."""
    from ..memory import reuse_freed_memory

    reuse_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(console())
