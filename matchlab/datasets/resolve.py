"""Finding a verified copy of a dataset: the mirror in place, else a local cache filled on demand.

`dataset_path(name)`:
  1. a mirror copy `<mirror>/<name>/` (`MATCHLAB_DATASETS_MIRROR`: folders separated by
     os.pathsep) whose every registered file has the registered size and sha256 is used in
     place, nothing copied;
  2. else the cache copy `<cache>/<name>/`, completed file by file: each missing or corrupt
     file is copied from a mirror or downloaded from its upstream URL (pinned commit), written
     to a temporary name, verified, then renamed into place. A file that no source yields with
     the right sha256 stops the fetch with an error naming the file and every source tried.
The cache is `MATCHLAB_DATA_DIR`, else the `datasets/` folder of a source checkout, else
`~/.cache/matchlab/datasets`. `fetch(name)` always completes and returns the cache copy.

Hashing all ~100 MB of sample datasets takes ~0.15 s; a file verified once is not hashed
again in the same process while its size and mtime are unchanged.
"""
from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable

from ..cache import cache_folder, mirror_folders, sha256_of
from .registry import DatasetError, DatasetFile, DatasetSpec, get_dataset

MIRROR_ENV = "MATCHLAB_DATASETS_MIRROR"
CACHE_ENV = "MATCHLAB_DATA_DIR"

# str(path) -> (size, mtime_ns, sha256) of a file whose content was hashed and matched
_verified: dict[str, tuple[int, int, str]] = {}


def cache_dir() -> Path:
    """Folder holding locally fetched datasets, one subfolder each; see matchlab.cache."""
    return cache_folder("datasets", CACHE_ENV)


def mirror_dirs() -> list[Path]:
    return mirror_folders(MIRROR_ENV)


def check_file(path: Path, file: DatasetFile) -> str | None:
    """None if `path` holds exactly `file`'s registered bytes, else the reason it does not."""
    try:
        stat = path.stat()
    except OSError:
        return "not there"
    if not path.is_file():
        return "not a regular file"
    if stat.st_size != file.size:
        return f"size {stat.st_size} bytes, want {file.size}"
    key = (stat.st_size, stat.st_mtime_ns, file.sha256)
    if _verified.get(str(path)) == key:
        return None
    got = sha256_of(path)
    if got != file.sha256:
        return f"sha256 mismatch (got {got[:12]}..., want {file.sha256[:12]}...)"
    _verified[str(path)] = key
    return None


def first_problem(root: Path, spec: DatasetSpec) -> str | None:
    """None if `root` holds every file of `spec` verified, else what is wrong with the first bad one."""
    if not root.is_dir():
        return f"{root}: not there"
    for file in spec.files:
        reason = check_file(root / file.path, file)
        if reason:
            return f"{root / file.path}: {reason}"
    return None


def _install(file: DatasetFile, target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `file` to a temporary name beside `target` with `write`, verify it, rename it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            write(out)
        reason = check_file(tmp, file)
        if reason:
            raise DatasetError(reason)
        os.replace(tmp, target)
        stat = target.stat()
        _verified[str(target)] = (stat.st_size, stat.st_mtime_ns, file.sha256)
    finally:
        tmp.unlink(missing_ok=True)
        _verified.pop(str(tmp), None)


def _from_mirror(spec: DatasetSpec, file: DatasetFile, target: Path) -> None:
    folders = mirror_dirs()
    if not folders:
        raise DatasetError(f"no mirror folder set ({MIRROR_ENV} is empty)")
    problems = []
    for folder in folders:
        candidate = folder / spec.name / file.path
        reason = check_file(candidate, file)  # rejects a bad copy before copying it
        if reason is None:
            with open(candidate, "rb") as src:
                return _install(file, target, lambda out: shutil.copyfileobj(src, out, 1 << 20))
        problems.append(f"{candidate}: {reason}")
    raise DatasetError("; ".join(problems))


def _from_url(spec: DatasetSpec, file: DatasetFile, target: Path, timeout: float = 30.0) -> None:
    url = spec.file_url(file.path)
    if url is None:
        raise DatasetError("no upstream URL known")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            _install(file, target, lambda out: shutil.copyfileobj(response, out, 1 << 20))
    except (DatasetError, OSError) as e:  # OSError: URLError, HTTPError, timeouts, refusals
        raise DatasetError(f"{url}: {e}") from None


SOURCES: list[tuple[str, Callable[[DatasetSpec, DatasetFile, Path], None]]] = [
    ("mirror", _from_mirror), ("url", _from_url)]


def _fill(spec: DatasetSpec, root: Path) -> Path:
    """Complete the copy at `root`: fetch every file that is missing or fails verification."""
    from tqdm import tqdm

    for done, file in enumerate(tqdm(spec.files, desc=spec.name, unit="file", leave=False,
                                     disable=None)):
        target = root / file.path
        if check_file(target, file) is None:
            continue  # a bad copy is left until a good one replaces it: no folder with it verifies
        tried = []
        for label, source in SOURCES:
            try:
                source(spec, file, target)
                break
            except (DatasetError, OSError) as e:  # OSError: e.g. an unwritable cache folder
                tried.append(f"  - {label}: {e}")
        else:
            raise DatasetError(
                f"could not obtain {file.path} of dataset {spec.name} (file {done + 1} of "
                f"{len(spec.files)}) into {root}; sources tried:\n" + "\n".join(tried))
    return root


def fetch(name: str, cache: Path | None = None) -> Path:
    """A complete, verified copy of dataset `name` in the cache (`cache`/name), made if needed."""
    spec = get_dataset(name)
    return _fill(spec, (cache or cache_dir()) / spec.name)


def dataset_path(name: str) -> Path:
    """Folder holding every file of dataset `name`, verified: a mirror copy in place, else the cache."""
    spec = get_dataset(name)
    for folder in mirror_dirs():
        if first_problem(folder / spec.name, spec) is None:
            return folder / spec.name
    return fetch(name)
