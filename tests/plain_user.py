"""Run Python code in a child process bound by file permissions, even when the tests run as
root (root normally ignores them, so a chmod-based test would prove nothing)."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def drop_permission_override() -> None:
    """In the child: give up root's licence to ignore file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) so that a read-only folder stops it as it stops any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c code` as a user bound by file permissions; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=child_env(), timeout=timeout,
                          preexec_fn=drop_permission_override if os.geteuid() == 0 else None)
