"""The shape of `matchlab.cli`: light imports (no torch for `import matchlab`, `import
matchlab.cli` or `matchlab --help`), every command in `COMMANDS` at import, command modules
that never import the module assembling them, and the error / exit-status policy of `main`."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import matchlab.cli
from matchlab.cli import COMMANDS, main
from matchlab.errors import StoreError

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "matchlab" / "cli"
HEAVY = ("torch", "cv2", "h5py", "pycolmap", "kornia")


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_import_matchlab_and_its_cli_load_no_heavy_module():
    proc = python("-c", "import sys, matchlab, matchlab.cli, matchlab.cli.app; "
                        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_imports_no_torch():
    """`python -m matchlab --help`, with Python's import log: neither torch nor cv2 loads."""
    proc = python("-X", "importtime", "-m", "matchlab", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "extract" in proc.stdout and "exit status:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "matchlab.cli.app" in imported  # the log is the real one
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_lazy_names_of_the_package_still_resolve():
    import matchlab

    assert matchlab.load_extractor is matchlab.registry.load_extractor
    assert matchlab.Features.__module__ == "matchlab.types"
    assert matchlab.localize.__module__ == "matchlab.sfm.localization"
    assert matchlab.triangulate.__module__ == "matchlab.sfm.triangulation"
    with pytest.raises(AttributeError):
        matchlab.no_such_name  # noqa: B018


def test_every_command_is_in_the_table_at_import():
    proc = python("-c", "from matchlab.cli import COMMANDS; print(' '.join(COMMANDS))")
    assert proc.stdout.split() == ["extract", "match", "pairs", "sfm", "localize",
                                   "triangulate", "eval", "weights", "datasets", "demo",
                                   "salvage", "merge"]
    for name, command in COMMANDS.items():
        assert (command.run is None) == bool(command.subcommands), name
        assert command.help, name


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import statement of a module, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.level, node.module or "")]
            if node.level == 1 and not node.module:  # from . import x
                found += [(1, alias.name) for alias in node.names]
    return found


def test_command_modules_import_neither_the_assembler_nor_heavy_modules_at_top():
    commands = [p for p in CLI.glob("*.py") if p.stem not in ("__init__", "app")]
    assert {p.stem for p in commands} >= {"common", "extract", "match", "pairs", "sfm",
                                         "evaluate"}
    for path in commands:
        for level, module in _imports(path):
            assert not (level == 1 and module in ("", "app")), (path.name, module)
            assert not (level == 0 and module.startswith("matchlab.cli")), (path.name, module)
            assert not (level == 1 and module not in ("common",)), (path.name, module)
        top = [node for node in ast.parse(path.read_text()).body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
        for node in top:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not any((n or "").split(".")[0] in HEAVY for n in names), (path.name, names)


def test_matchlab_errors_are_one_line_other_errors_keep_their_traceback(monkeypatch, capsys):
    command = COMMANDS["salvage"]

    def store_fails(args):
        raise StoreError(f"{args.file}: cannot open (a RuntimeError too)")

    monkeypatch.setattr(command, "run", store_fails)
    assert main(["salvage", "x.h5"]) == 1
    assert capsys.readouterr().err == "matchlab: error: x.h5: cannot open (a RuntimeError too)\n"

    def bug(args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(command, "run", bug)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        main(["salvage", "x.h5"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run", interrupted)
    assert main(["salvage", "x.h5"]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["extract"])  # missing arguments
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["match", "f.h5", "p.txt", "m.h5", "--matcher", "no_such_matcher"])
    assert info.value.code == 2
    assert "invalid choice: 'no_such_matcher'" in capsys.readouterr().err
    assert main(["datasets"]) == 2
    assert matchlab.cli.__all__ == ["main", "COMMANDS", "build_parser"]
