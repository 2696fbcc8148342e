"""Shared fixtures. The weight and dataset mirrors come from MATCHLAB_WEIGHTS_MIRROR and
MATCHLAB_DATASETS_MIRROR (the Makefile sets them), else a `shared` folder beside the checkout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from matchlab.cache import use_shared_mirrors

# precision="auto" is bfloat16 for some models on CPUs with native bfloat16: the suite's
# measured numbers must not depend on the machine (subprocesses inherit it);
# tests/test_precision.py unsets it where it tests the hardware rule
os.environ["MATCHLAB_AUTO_PRECISION"] = "float32"

# Under pytest-xdist (`make test`) the cores are shared by the test processes: one torch
# thread each, so that two processes on two cores do not each run two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    cores = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
use_shared_mirrors(SHARED)


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    """Folder holding the sample datasets (MATCHLAB_DATASETS_MIRROR)."""
    root = Path(os.environ.get("MATCHLAB_DATASETS_MIRROR", SHARED / "datasets"))
    if not root.is_dir():
        pytest.fail(f"sample datasets not found at {root}; set MATCHLAB_DATASETS_MIRROR")
    return root


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The weight mirror folder (MATCHLAB_WEIGHTS_MIRROR: AffNet.pth, OriNet.pth)."""
    root = Path(os.environ.get("MATCHLAB_WEIGHTS_MIRROR", SHARED / "weights"))
    if not root.is_dir():
        pytest.fail(f"weight mirror not found at {root}; set MATCHLAB_WEIGHTS_MIRROR")
    return root
