"""`matchlab datasets list|fetch`: the sample datasets."""
from __future__ import annotations

import argparse

from .common import EXIT_OK, Command


def _list(args: argparse.Namespace) -> int:
    from ..datasets import list_datasets

    specs = list_datasets()
    width = max((len(s.name) for s in specs), default=0)
    for spec in specs:
        print(f"  {spec.name:<{width}}  {spec.description}")
    return EXIT_OK


def _fetch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name (see `matchlab datasets list`)")


def _fetch(args: argparse.Namespace) -> int:
    from ..datasets import fetch

    print(fetch(args.name))  # DatasetError (a MatchlabError) when unknown or unobtainable
    return EXIT_OK


COMMAND = Command("list or fetch the sample datasets", subcommands={
    "list": Command("registered datasets", _list),
    "fetch": Command("a verified copy of a dataset; prints its folder", _fetch, _fetch_arguments),
})
