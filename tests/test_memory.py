"""The allocator setting of the `matchlab` command: freed network activations are reused
instead of being faulted in again page by page on every forward pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Prints the minor page faults of one DISK forward pass at 1024 px after two first ones (the
# heap reaches its working size by then; the second may still grow it a little), in a fresh process, with the allocator as the command sets it (argv[1] == "reuse") or not.
_FAULTS_PER_CALL = """
import resource, sys
import torch
from matchlab import memory
from matchlab.registry import load_extractor
if sys.argv[1] == "reuse":
    assert memory.reuse_freed_memory()
torch.manual_seed(0)
image = torch.rand(3, 731, 1024)
disk = load_extractor("disk", resize=None, max_keypoints=2048, precision="float32")
disk(image)
disk(image)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
features = disk(image)
print(len(features), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_per_call(allocator: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS_PER_CALL, allocator], cwd=REPO,
                         capture_output=True, text=True, check=True)
    keypoints, faults = map(int, out.stdout.split()[-2:])
    return keypoints, faults


@pytest.mark.slow
def test_reused_memory_is_not_faulted_in_again():
    """DISK float32 at 1024 x 731 faults ~2.6 GB (~650,000 pages) a call with glibc's
    defaults: each activation is a fresh mmap. With `reuse_freed_memory` the third call
    reuses the heap of the first two: under 1 % of those faults (measured 0 in 4 of 4 runs,
    then 0-5,900 on later calls; the second call: 2,900-52,000). Same keypoints either way."""
    from matchlab import memory

    if memory._glibc() is None:
        pytest.fail("no glibc: this test expects Linux with glibc (as CI)")
    kp_default, default = faults_per_call("default")
    kp_reuse, reuse = faults_per_call("reuse")
    print(f"minor page faults per DISK call: default {default}, reuse_freed_memory {reuse}")
    assert kp_default == kp_reuse == 2048
    assert default > 200_000
    assert reuse < default / 100


def test_the_command_sets_the_allocator(monkeypatch):
    """The `matchlab` script and `python -m matchlab` go through `console`, which sets the
    allocator before running the command."""
    import tomllib

    from matchlab import memory
    from matchlab.cli import app

    calls = []
    monkeypatch.setattr(memory, "reuse_freed_memory", lambda: calls.append("allocator"))
    monkeypatch.setattr(app, "main", lambda: calls.append("main") or 0)
    assert app.console() == 0 and calls == ["allocator", "main"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["matchlab"] == "matchlab.cli.app:console"
    assert "console()" in (REPO / "matchlab" / "__main__.py").read_text()
