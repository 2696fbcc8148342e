"""Where downloaded files live: one rule for weights and sample datasets.

A cache folder is chosen in this order: the environment variable `cache_env`, the
checkout's own folder (`weights/`, `datasets/`) when it holds a README and is writable,
else `$XDG_CACHE_HOME/matchlab/<kind>` (default `~/.cache/matchlab/<kind>`). Mirrors are
read-only folders listed in `mirror_env` (os.pathsep-separated) that hold verified copies.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_folder(kind: str, cache_env: str) -> Path:
    """The cache folder for `kind` ('weights' or 'datasets'); created by the caller on demand."""
    if os.environ.get(cache_env):
        return Path(os.environ[cache_env])
    checkout = Path(__file__).resolve().parents[1] / kind
    if (checkout / "README.md").is_file() and os.access(checkout, os.W_OK):
        return checkout
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "matchlab" / kind


def mirror_folders(mirror_env: str) -> list[Path]:
    return [Path(p) for p in os.environ.get(mirror_env, "").split(os.pathsep) if p]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def use_shared_mirrors(shared: Path) -> None:
    """Point the weight and dataset mirrors at `shared`/weights and `shared`/datasets when
    those folders exist and the variables are not set already (tests, benchmarks, CI)."""
    for kind, env in (("weights", "MATCHLAB_WEIGHTS_MIRROR"), ("datasets", "MATCHLAB_DATASETS_MIRROR")):
        if (Path(shared) / kind).is_dir():
            os.environ.setdefault(env, str(Path(shared) / kind))
