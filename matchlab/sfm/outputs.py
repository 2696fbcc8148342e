"""Replacing outputs in a user's folder without ever deleting what matchlab did not write.

`reconstruct` and `export_model` rewrite models/, sparse/, sparse_text/ and points3D.ply in
an output folder on every run. Each is written under a temporary name (`.NAME.tmp`), the
files it holds are recorded in OUTPUT_DIR/.matchlab-outputs.json, and only then is it moved
into place, removing the files of the previous version that the record lists. A file there
that is not in the record (put there by the user or another tool, or by a matchlab version
that kept no record) is never deleted: the run stops first with `OutputConflictError`
naming it. A kill at any moment leaves the record listing every file matchlab wrote.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import OutputConflictError

RECORD = ".matchlab-outputs.json"


def _files(path: Path, root: Path) -> set[str]:
    """'/'-separated paths relative to root of the files at or below `path`."""
    if path.is_dir():
        return {p.relative_to(root).as_posix() for p in path.rglob("*") if not p.is_dir()}
    return {path.relative_to(root).as_posix()} if path.exists() or path.is_symlink() else set()


def _read_record(out_dir: Path) -> set[str]:
    path = out_dir / RECORD
    if not path.is_file():
        return set()
    try:
        return set(json.loads(path.read_text())["files"])
    except (ValueError, KeyError, TypeError):
        raise OutputConflictError(f"{path} (matchlab's list of the files it wrote in "
                                  f"{out_dir}) is unreadable; delete it together with the "
                                  f"outputs it listed, or choose another output folder") from None


def _write_record(out_dir: Path, files: set[str]) -> None:
    tmp = out_dir / f"{RECORD}.tmp"
    tmp.write_text(json.dumps({"files": sorted(files)}, indent=0))
    os.replace(tmp, out_dir / RECORD)


def _remove_tmp(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    elif tmp.exists() or tmp.is_symlink():
        tmp.unlink()


def _remove_recorded(final: Path, out_dir: Path, recorded: set[str]) -> None:
    """Delete the recorded files at or below `final`, then the folders left empty."""
    for name in sorted(_files(final, out_dir) & recorded):
        (out_dir / name).unlink()
    if final.is_dir():
        for folder in sorted((p for p in final.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(final.iterdir()):
            final.rmdir()


def check_replaceable(out_dir: str | os.PathLike, name: str) -> None:
    """OutputConflictError when OUTPUT_DIR/name holds a file matchlab did not write."""
    out_dir = Path(out_dir)
    final = out_dir / name
    foreign = sorted(_files(final, out_dir) - _read_record(out_dir))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OutputConflictError(
            f"{final} holds {len(foreign)} file(s) matchlab did not write ({shown}); matchlab "
            f"replaces {name} on every run and never deletes files it did not write. Move them "
            f"away, or choose another output folder.")


def replace_output(out_dir: str | os.PathLike, name: str,
                   write: Callable[[Path], Any]) -> Any:
    """Write OUTPUT_DIR/name (a folder or a file) anew: `write(tmp_path)` writes it under a
    temporary name, which then replaces the previous version. Returns what `write` returns.
    Refuses (`OutputConflictError`, before writing anything) when the previous version holds
    files matchlab did not write."""
    out_dir = Path(out_dir)
    final, tmp = out_dir / name, out_dir / f".{name}.tmp"
    check_replaceable(out_dir, name)
    _remove_tmp(tmp)  # left by a killed run
    try:
        result = write(tmp)
        written = {f"{name}{p[len(tmp.name):]}" for p in _files(tmp, out_dir)}
        recorded = _read_record(out_dir)
        _write_record(out_dir, recorded | written)
        _remove_recorded(final, out_dir, recorded)
        os.replace(tmp, final)
        others = {f for f in recorded if f != name and not f.startswith(name + "/")}
        _write_record(out_dir, others | written)
    finally:
        _remove_tmp(tmp)
    return result
