"""Image pairs: exhaustive and sequential generators, pairs files, de-duplication.

Everything here is a pure function over image names (relative paths such as ``db/1.jpg``,
the same keys the HDF5 stores use). Order is kept: generators follow the order of the
``names`` they are given, and `dedupe_pairs` keeps the first occurrence.

Pairs file format (``pairs.txt``)
---------------------------------
One pair per line. A line is either

* ``name0 name1``  - two names separated by whitespace: exactly hloc's format (and
  COLMAP's ``verify_matches`` format), used when neither name contains whitespace; or
* ``name0<TAB>name1`` - exactly one TAB character separates the two names, which may then
  contain spaces (``my photos/img 1.jpg<TAB>my photos/img 2.jpg``). Names are taken
  verbatim, so leading or trailing spaces inside a name survive.

Blank lines and lines whose first non-blank character is ``#`` are ignored (COLMAP skips
such lines too). A line that fits neither form raises `PairsFileError` naming the file and
line number. `write_pairs_file` writes the space form whenever it can (so files with
ordinary names stay byte-identical to hloc's) and the TAB form only for lines whose names
contain whitespace. A pair whose first name starts with ``#`` is written in reverse order
(pairs are unordered for matching); names containing a TAB or a line break, or pairs whose
names both start with ``#``, cannot be represented and are rejected. Files are UTF-8.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import PairsFileError

Pair = tuple[str, str]

__all__ = ["Pair", "PairsFileError", "exhaustive_pairs", "sequential_pairs", "dedupe_pairs",
           "read_pairs_file", "write_pairs_file", "parse_pairs_spec", "spec_part_pairs",
           "SPEC_FORMS", "POSE_SPEC_FORMS"]


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, (str, bytes)):
        raise TypeError("names must be a sequence of image names, not a single string")
    names = list(names)
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"image names must be non-empty strings, got {name!r}")
        if name in seen:
            raise ValueError(f"image name {name!r} appears twice in the list")
        seen.add(name)
    return names


def exhaustive_pairs(names: Sequence[str]) -> list[Pair]:
    """All n(n-1)/2 unordered pairs (names[i], names[j]) with i < j, in list order."""
    names = _check_names(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential_pairs(names: Sequence[str], window: int) -> list[Pair]:
    """Each image with its next `window` images in list order (video frames).

    The caller decides the order (e.g. ``sorted(names)`` for numbered frames). With n
    images the result has sum_i min(window, n-1-i) pairs; window >= n-1 is exhaustive.
    """
    names = _check_names(names)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    return [(names[i], names[j])
            for i in range(len(names)) for j in range(i + 1, min(i + 1 + window, len(names)))]


def dedupe_pairs(pairs: Iterable[Sequence[str]]) -> list[Pair]:
    """Drop self-pairs and repeats; (a, b) and (b, a) count once (the first one seen is kept)."""
    seen: set[frozenset[str]] = set()
    out: list[Pair] = []
    for pair in pairs:
        a, b = _as_pair(pair)
        if a == b:
            continue
        key = frozenset((a, b))
        if key in seen:
            continue
        seen.add(key)
        out.append((a, b))
    return out


def _as_pair(pair: Sequence[str]) -> Pair:
    if isinstance(pair, (str, bytes)) or len(pair) != 2:
        raise ValueError(f"a pair must be two image names, got {pair!r}")
    a, b = pair
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        raise ValueError(f"a pair must be two non-empty strings, got {pair!r}")
    return a, b


def parse_pairs_line(line: str) -> Pair | None:
    """One line of a pairs file -> (name0, name1), or None for a blank/comment line.

    Raises ValueError (without location; `read_pairs_file` adds file and line number).
    """
    line = line.rstrip("\r\n")
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if "\t" in line:
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"expected exactly one TAB between two names, found "
                             f"{len(parts) - 1} TABs")
        a, b = parts
        if not a.strip() or not b.strip():
            raise ValueError("empty image name on one side of the TAB")
        return a, b
    parts = stripped.split()
    if len(parts) != 2:
        hint = (" (names containing spaces must be separated by a single TAB)"
                if len(parts) > 2 else "")
        raise ValueError(f"expected two image names, found {len(parts)}{hint}")
    return parts[0], parts[1]


def format_pairs_line(a: str, b: str) -> str:
    """(name0, name1) -> one line (without newline): space form unless a name has whitespace.

    The two names are swapped if the first starts with '#' (see the module docstring).
    """
    for name in (a, b):
        if not name:
            raise ValueError("cannot write an empty image name")
        if any(c in name for c in "\t\n\r\v\f"):
            raise ValueError(f"image name {name!r} contains a TAB or line break; "
                             "it cannot be written to a pairs file")
    if a.lstrip().startswith("#"):
        if b.lstrip().startswith("#"):
            raise ValueError(f"pair ({a!r}, {b!r}): both names start with '#', which a pairs "
                             "file reads as a comment")
        a, b = b, a  # a line starting with '#' would be read as a comment
    if any(c.isspace() for c in a + b):
        return f"{a}\t{b}"
    return f"{a} {b}"


def read_pairs_file(path: str | os.PathLike, with_lines: bool = False) -> list:
    """Read a pairs file (format in the module docstring). Order and repeats are kept.

    with_lines: return (name0, name1, line number) triples instead of pairs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    pairs: list[Pair] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                pair = parse_pairs_line(line)
            except ValueError as e:
                raise PairsFileError(f"{path} line {lineno}: {e}: {line.rstrip(chr(10))!r}") from None
            if pair is not None:
                pairs.append((*pair, lineno) if with_lines else pair)
    return pairs


def write_pairs_file(path: str | os.PathLike, pairs: Iterable[Sequence[str]]) -> Path:
    """Write pairs (format in the module docstring) atomically (temp file + rename).

    A path that cannot be written (permission, a folder of that name) is a `PairsFileError`
    naming it and the reason."""
    path = Path(path)
    lines = [format_pairs_line(*_as_pair(p)) for p in pairs]
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except OSError as e:  # no permission, a folder of that name, a full disk
        if tmp.is_file():
            tmp.unlink()
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        raise PairsFileError(f"cannot write pairs file {path}: {e.strerror or e}{where}") from None
    return path


SpecPart = tuple[str, "int | str | None"]
SPEC_FORMS = "exhaustive | sequential:N | retrieval:K | sequential:N+retrieval:K | file:PATH"
# need known camera poses (`matchlab triangulate`; see `retrieval.pose_pairs`)
POSE_SPEC_FORMS = "nearest:K | covisible:K"


def parse_pairs_spec(spec: str, with_poses: bool = False) -> list[SpecPart]:
    """The pairs-spec grammar, parsed here for every caller (`matchlab sfm --pairs`,
    `matchlab pairs --pairs`, `matchlab triangulate --pairs`, `select_pairs`).

    'exhaustive' -> [('exhaustive', None)]; 'sequential:5+retrieval:10' -> [('sequential', 5),
    ('retrieval', 10)] (parts joined by '+' are unioned); 'file:PATH' -> [('file', 'PATH')]
    (alone; PATH may contain ':' and '+'). N, K >= 1. with_poses: the camera poses are
    known, and 'nearest:K' / 'covisible:K' are parts too. Anything else is a
    `PairsFileError`.
    """
    text = spec.strip()
    if text.lower().startswith("file:") and text[5:]:
        return [("file", text[5:])]
    forms = SPEC_FORMS + (" | " + POSE_SPEC_FORMS if with_poses else "")
    parts: list[SpecPart] = []
    for part in text.split("+"):
        kind, sep, arg = part.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "exhaustive" and not sep:
            parts.append(("exhaustive", None))
            continue
        if kind in ("nearest", "covisible") and not with_poses:
            raise PairsFileError(f"bad pairs spec {spec!r}: {kind}:K pairs images by their known "
                                 f"camera poses (matchlab triangulate); here use {SPEC_FORMS}")
        if kind in ("sequential", "retrieval", "nearest", "covisible"):
            try:
                value = int(arg)
            except ValueError:
                value = 0
            if value >= 1:
                parts.append((kind, value))
                continue
        raise PairsFileError(f"bad pairs spec {spec!r}: expected {forms} (N, K >= 1)")
    return parts


def spec_part_pairs(kind: str, arg: "int | str | None", names: Sequence[str]) -> list[Pair]:
    """The pairs of one part of a parsed spec that needs no global descriptors (exhaustive,
    sequential:N, file:PATH) over `names`. A pairs file must only name images of `names`
    (else `PairsFileError`); retrieval parts are `retrieval.select`'s job."""
    names = _check_names(names)
    if kind == "exhaustive":
        return exhaustive_pairs(names)
    if kind == "sequential":
        return sequential_pairs(names, int(arg))
    if kind == "file":
        try:
            pairs = dedupe_pairs(read_pairs_file(arg))
        except (OSError, UnicodeDecodeError) as e:
            raise PairsFileError(f"pairs spec file:{arg}: cannot read it: {e}") from None
        known = set(names)
        unknown = sorted({n for p in pairs for n in p if n not in known})
        if unknown:
            shown = ", ".join(repr(n) for n in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise PairsFileError(f"pairs file {arg} names {len(unknown)} image(s) that are "
                                 f"not in the image list: {shown}{more}")
        return pairs
    raise PairsFileError(f"pairs spec part {kind}:{arg} needs global descriptors; "
                         "`matchlab.retrieval.select.select_pairs` computes them")
