"""Per-image gravity files: one "name gx gy gz" line per image (# starts a comment), the
down direction in camera coordinates (OpenCV axes: x right, y down, z forward; an upright
camera has (0, 1, 0)); see `matchlab.geometry.primitives.camera.gravity_rotation`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError


def read_gravity(path: str | Path) -> dict[str, np.ndarray]:
    """{image name: unit gravity [3]} from a gravity file; ConfigError (a ValueError) naming
    the file and line of a malformed entry."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=3)
        if len(parts) != 4:
            raise ConfigError(f"{path}:{n}: expected 'name gx gy gz', got {line!r}")
        try:
            g = np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise ConfigError(f"{path}:{n}: gravity must be three numbers, got {line!r}") from None
        if not np.isfinite(g).all() or np.linalg.norm(g) == 0:
            raise ConfigError(f"{path}:{n}: gravity must be a finite non-zero vector")
        out[parts[0]] = g / np.linalg.norm(g)
    return out
