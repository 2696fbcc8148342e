"""Regenerate `manifest.json` (every file's path, size and sha256) from a dataset mirror.

    python -m matchlab.datasets.build_manifest [MIRROR]    # default: $MATCHLAB_DATASETS_MIRROR

Run it after a dataset is added to `registry._SPECS` or its mirror copy changes, then commit
the manifest. Each registered dataset must be a folder `<MIRROR>/<name>/`; every regular file
in it is listed except the mirror's own notes (`SOURCE.md`), which have no upstream copy.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..weights import sha256_of
from .registry import _SPECS, MANIFEST, DatasetError, DatasetFile

MIRROR_ONLY = {"SOURCE.md"}


def scan_dataset(folder: Path) -> list[DatasetFile]:
    """The files of one dataset folder, sorted by relative path ('/'-separated)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such dataset folder")
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative not in MIRROR_ONLY:
            files.append(DatasetFile(relative, path.stat().st_size, sha256_of(path)))
    return files


def build_manifest(mirror: Path, output: Path | None = MANIFEST) -> dict[str, list[DatasetFile]]:
    """Scan `<mirror>/<name>/` for every registered dataset; write `output` unless it is None.

    The JSON holds {"datasets": {name: [[path, size, sha256], ...]}}, one file a line, so that
    a change to the data shows up as a readable diff.
    """
    listed = {spec.name: scan_dataset(Path(mirror) / spec.name) for spec in _SPECS}
    if output is not None:
        blocks = []
        for name, files in listed.items():
            rows = ",\n".join(f'      [{json.dumps(f.path)}, {f.size}, "{f.sha256}"]' for f in files)
            blocks.append(f'    {json.dumps(name)}: [\n{rows}\n    ]')
        text = '{\n  "datasets": {\n' + ",\n".join(blocks) + "\n  }\n}\n"
        tmp = Path(output).with_name(f".{Path(output).name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, output)
    return listed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mirror = args[0] if args else os.environ.get("MATCHLAB_DATASETS_MIRROR", "").split(os.pathsep)[0]
    if not mirror:
        print(__doc__, file=sys.stderr)
        return 2
    listed = build_manifest(Path(mirror))
    total = sum(f.size for files in listed.values() for f in files)
    print(f"{MANIFEST}: {len(listed)} datasets, {sum(map(len, listed.values()))} files, "
          f"{total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
