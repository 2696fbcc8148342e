"""`matchlab salvage FILE`: rewrite a damaged HDF5 store keeping its intact items."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, Command, list_names


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a damaged features / matches / global HDF5 file")


def run(args: argparse.Namespace) -> int:
    from ..store import salvage

    report = salvage(args.file)
    if report["healthy"]:
        print(f"{args.file} opens and all its objects read: nothing to salvage, left as it is")
        return EXIT_OK
    dropped = report["dropped"]
    print(f"{args.file}: kept {len(report['kept'])} intact items, dropped {len(dropped)}"
          f"{': ' + list_names(dropped) if dropped else ''}")
    print(f"the damaged file is kept as {report['backup']}; re-run the command that made the "
          f"file to recompute the dropped items")
    return EXIT_OK


COMMAND = Command("rewrite a damaged HDF5 store keeping its intact items", run, arguments)
