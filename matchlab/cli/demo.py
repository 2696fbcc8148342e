"""`matchlab demo`: reconstruct the sacre_coeur sample scene end to end."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_ERROR, EXIT_OK, Command, add_device_argument, output_folder, resolve_device


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, default=Path("outputs/demo"),
                   help="where the model, plots and report go")
    add_device_argument(p)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when no image was registered."""
    from ..demo import run_demo

    output_folder(args.output_dir, "--output-dir")
    summary = run_demo(args.output_dir, device=resolve_device(args.device))
    return EXIT_OK if summary["num_reg_images"] > 0 else EXIT_ERROR


COMMAND = Command("reconstruct the sacre_coeur sample scene end to end", run, arguments)
