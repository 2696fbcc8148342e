"""Pair selection for `run_sfm` / `matchlab sfm --pairs SPEC`: the one place that turns a pairs
spec into a list of image pairs, computing whatever it needs (e.g. global descriptors) into
output_dir so that the stage resumes like the others."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .pairs import Pair, parse_pairs_spec


def select_pairs(spec: str, names: Sequence[str], *, image_dir: str | Path,
                 output_dir: str | Path, global_descriptor: str = "auto",
                 progress: bool = True) -> list[Pair]:
    """Pairs for `spec` ('exhaustive' | 'sequential:N' | 'file:PATH') among `names`."""
    return parse_pairs_spec(spec, names)
