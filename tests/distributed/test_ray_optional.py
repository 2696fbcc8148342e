"""Ray stays optional: matchlab and its command line work without it, and --executor ray
says what to install or what is wrong with the cluster's address."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from matchlab.errors import ClusterError, UsageError

REPO = Path(__file__).resolve().parents[2]

WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
import matchlab
from matchlab.cli.app import build_parser, main
build_parser()
assert "ray" not in sys.modules or sys.modules["ray"] is None
sys.exit(main(["extract", sys.argv[1], sys.argv[2], "--executor", "ray"]))
"""


def test_without_ray_only_executor_ray_fails(tmp_path, datasets_root):
    image_dir = datasets_root / "hloc_sacre_coeur" / "mapping"
    run = subprocess.run([sys.executable, "-c", WITHOUT_RAY, str(image_dir),
                          str(tmp_path / "features.h5")], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "pip install 'matchlab[ray]'" in run.stderr
    assert not (tmp_path / "features.h5").exists()


def test_importing_the_cli_does_not_import_ray():
    code = ("import sys, matchlab; from matchlab.cli.app import build_parser; build_parser(); "
            "import matchlab.pipeline, matchlab.distributed.executors; "
            "print('ray' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.stdout.strip() == "False", run.stderr


def test_unreachable_address_is_one_clear_error():
    pytest.importorskip("ray")
    from matchlab.distributed.ray_executor import _check_reachable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(UsageError, match="HOST:PORT"):
        _check_reachable("headnode")


def test_ray_options_need_executor_ray(tmp_path, datasets_root, capsys):
    from matchlab.cli.app import main

    image_dir = datasets_root / "hloc_sacre_coeur" / "mapping"
    assert main(["extract", str(image_dir), str(tmp_path / "f.h5"), "--workers", "2"]) == 1
    assert "--workers: only with --executor ray" in capsys.readouterr().err
