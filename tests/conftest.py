"""Shared fixtures. Point the weight and dataset mirrors at ../shared when it exists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from matchlab.cache import use_shared_mirrors

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
use_shared_mirrors(SHARED)


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    """Folder holding the sample datasets (the mirror: ../shared/datasets)."""
    root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", SHARED / "datasets"))
    if not root.is_dir():
        pytest.fail(f"sample datasets not found at {root}; set MATCHLAB_DATASETS_MIRROR")
    return root


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The weight mirror folder (../shared/weights: AffNet.pth, OriNet.pth)."""
    root = Path(os.environ.get("MATCHLAB_WEIGHTS_MIRROR", SHARED / "weights"))
    if not root.is_dir():
        pytest.fail(f"weight mirror not found at {root}; set MATCHLAB_WEIGHTS_MIRROR")
    return root
