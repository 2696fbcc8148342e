"""Shards: one of N parts of a stage's work written to its own file, and their merge.

`--shard I/N` (I counts from 0: 0/4 ... 3/4, as SLURM's `--array=0-3`) makes extract, match
or the global descriptors of `matchlab pairs` work on the I-th of N contiguous blocks of the
stage's items in the order the stage processes them: image names sorted, pairs in
`pipeline.visit_order` (images in name order, each pair at its later image), so that a match
shard reads each image's features about once instead of from all over the file. Hashing the
names would also be deterministic, but it scatters a shard's pairs over every image. The
split depends only on the full item list, so every machine computes the same blocks.

A shard file is an ordinary output of its stage (resumed like any other) plus one root
entry, `SHARD_ENTRY`: its record (kind, index, count, number and digest of the full item
list) and the items assigned to it, so that `merge_shards` can check that shards belong
together and name the items an unfinished shard lacks. The merged file holds neither: it
equals what one unsharded run writes (same items, datasets, values and model records).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import OutputMismatchError, StoreError, UsageError
from ..store import FeatureStore, GlobalStore, MatchStore
from ..store.h5safe import Store
from ..store.tree import WRITING, has_entries

SHARD_ENTRY = ".matchlab_shard"  # root group: dataset `items`, attribute `record` (JSON)
SEPARATOR = "\0"  # between the fields of the stored item list (no file name holds a NUL)
LIMIT = 10  # names shown in a message


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0 <= index < count) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Kind:
    """What a stage's shard files hold: their store class and what an item is (an image
    name, or a pair of names)."""

    name: str
    store: type[Store]
    fields: int  # names per item: 1 (an image) or 2 (a pair)


KINDS = {kind.name: kind for kind in (Kind("features", FeatureStore, 1),
                                      Kind("matches", MatchStore, 2),
                                      Kind("global", GlobalStore, 1))}


def parse_shard(text: str) -> Shard:
    """'I/N' -> Shard(I, N); a UsageError saying what is wrong otherwise."""
    index, sep, count = str(text).strip().partition("/")
    try:
        shard = Shard(int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None:
        raise UsageError(f"bad shard {text!r}: expected I/N (shard I of N, I counting from 0)")
    if shard.count < 1:
        raise UsageError(f"bad shard {text!r}: N must be at least 1")
    if not 0 <= shard.index < shard.count:
        raise UsageError(f"bad shard {text!r}: I counts from 0, so the shards of {shard.count} are "
                         f"0/{shard.count} ... {shard.count - 1}/{shard.count}")
    return shard


def split(items: Sequence, shard: Shard) -> list:
    """The items of `shard`: the index-th of `count` contiguous blocks of `items`, the block
    sizes differing by at most one (empty blocks when there are fewer items than shards)."""
    n = len(items)
    return list(items[shard.index * n // shard.count:(shard.index + 1) * n // shard.count])


def _encode(items: Sequence, fields: int) -> np.ndarray:
    """Items (names, or pairs of names) as one uint8 array of NUL-separated UTF-8 fields."""
    flat = list(items) if fields == 1 else [name for item in items for name in item]
    return np.frombuffer(SEPARATOR.join(flat).encode("utf-8"), np.uint8).copy()


def _decode(array: np.ndarray, fields: int, count: int) -> list:
    if count == 0:
        return []
    flat = bytes(np.asarray(array, np.uint8)).decode("utf-8").split(SEPARATOR)
    return flat if fields == 1 else list(zip(flat[0::2], flat[1::2]))


def _digest(items: Sequence, fields: int) -> str:
    return hashlib.sha1(_encode(items, fields).tobytes()).hexdigest()[:16]


def _read_shard(store: Store) -> tuple[dict, list] | None:
    """(record, the shard's items) of an open shard file; None for any other file."""
    group = store.file.get(SHARD_ENTRY)
    if group is None or "record" not in group.attrs or "items" not in group:
        return None
    record = json.loads(group.attrs["record"])
    kind = KINDS[record["kind"]]
    return record, _decode(group["items"][()], kind.fields, record["items"])


def _what(record: dict) -> str:
    items = "pairs" if KINDS[record["kind"]].fields == 2 else "images"
    return (f"{record['kind']} shard {record['index']}/{record['count']} of {record['total']} "
            f"{items}, list digest {record['digest']}")


def _describe(path: Path, record: dict) -> str:
    return f"{path} ({_what(record)})"


def claim(path: str | Path, kind: str, shard: Shard | None, items: Sequence) -> list:
    """The items this run works on, out of `items` (in the stage's order), before the stage
    writes `path`. With a shard: its block of `items`, recorded in a new file or checked
    against the record of an existing one (OutputMismatchError when it is another shard or
    another item list). Without: all items, and a UsageError when `path` is a shard file."""
    path, spec = Path(path), KINDS[kind]
    if shard is None:
        found = None
        if path.is_file() and path.stat().st_size:
            try:
                with spec.store(path, "r") as store:
                    found = _read_shard(store)
            except StoreError:  # damaged, in use...: the stage opens it and says (or repairs)
                pass
        if found is not None:
            raise UsageError(
                f"{_describe(path, found[0])} was written with --shard; resume it with "
                f"--shard {found[0]['index']}/{found[0]['count']}, or join the shards with "
                f"`matchlab merge` and write the rest into the merged file")
        return list(items)
    mine = split(items, shard)
    record = {"kind": kind, "index": shard.index, "count": shard.count, "total": len(items),
              "digest": _digest(items, spec.fields), "items": len(mine)}
    with spec.store(path) as store:
        found = _read_shard(store)
        if found is None:
            store.write_group(SHARD_ENTRY, {"items": _encode(mine, spec.fields)},
                              attrs={"record": json.dumps(record)}, overwrite=True)
        elif found[0] != record:
            raise OutputMismatchError(
                f"{_describe(path, found[0])} is not what this run writes: {_what(record)}. "
                f"Use another output file for this shard, or the same --shard and inputs as "
                f"before")
    return mine


# ----------------------------------------------------------------------------- merge

@dataclass
class _Part:
    """One shard file given to merge: its record, items and root attributes (model records)."""

    path: Path
    record: dict
    items: list
    attrs: dict


@dataclass
class MergeReport:
    """What `merge_shards` did: items copied now, found in the output already, and the items
    no shard file held (accepted with allow_missing)."""

    kind: str
    total: int
    copied: int = 0
    already: int = 0
    missing: list = field(default_factory=list)


def _names(items: Sequence, limit: int = LIMIT, quote: bool = True) -> str:
    """At most `limit` items ('a.jpg', 'a.jpg b.jpg' for a pair), then how many more."""
    shown = [" ".join(item) if isinstance(item, tuple) else item for item in items[:limit]]
    more = f" ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(repr(s) if quote else s for s in shown) + more


def _flat(value, prefix: str) -> dict:
    """{'key.sub': value} of a (nested) record, to name what differs."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}").items()}


def _parsed(text: str | None):
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def _differences(first: dict, second: dict) -> str:
    """'key.sub: a vs b; ...' for the record attributes that differ between two files."""
    out = []
    for key in sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k)):
        a, b = _flat(_parsed(first.get(key)), key), _flat(_parsed(second.get(key)), key)
        out += [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)]
    return "; ".join(out)


def _root_attrs(store: Store) -> dict:
    """The root attributes that say what made a file (its model records), as strings."""
    return {key: str(value) for key, value in store.file.attrs.items() if key != WRITING}


def _open_parts(paths: Sequence[Path]) -> list[_Part]:
    parts = []
    for path in paths:
        with FeatureStore(path, "r") as store:  # any store class reads the root
            found = _read_shard(store)
            attrs = _root_attrs(store)
        if found is None:
            raise UsageError(f"{path} is not a shard file (it has no shard record); merge "
                             f"joins the files written by extract, match or pairs with "
                             f"--shard I/N")
        parts.append(_Part(path, found[0], found[1], attrs))
    return parts


def _check_together(parts: list[_Part]) -> None:
    """UsageError / OutputMismatchError unless the shards are of one run: same kind, count,
    item list and model records, each index once and none missing."""
    first = parts[0]
    for part in parts[1:]:
        for key, what in (("kind", "hold different kinds of results"),
                          ("count", "split the work in different numbers of shards"),
                          ("digest", "split different lists of items (other images, pairs "
                                     "or options that select them)")):
            if part.record[key] != first.record[key]:
                raise UsageError(f"{_describe(first.path, first.record)} and "
                                 f"{_describe(part.path, part.record)} {what}; merge the "
                                 f"shards of one run")
        if part.attrs != first.attrs:
            raise OutputMismatchError(f"{first.path} and {part.path} were made with different "
                                      f"models or options ({_differences(first.attrs, part.attrs)}"
                                      f"); merging them would mix results silently")
    owner: dict = {}
    overlaps: dict[tuple[Path, Path], list] = {}
    for part in parts:
        for item in part.items:
            key = item if isinstance(item, str) else tuple(sorted(item))
            if key in owner:
                overlaps.setdefault((owner[key], part.path), []).append(item)
            else:
                owner[key] = part.path
    if overlaps:
        (a, b), items = next(iter(overlaps.items()))
        raise UsageError(f"{a} and {b} overlap: both hold {len(items)} of the same items "
                         f"({_names(items)}); give each shard once")
    count = first.record["count"]
    given = {part.record["index"] for part in parts}
    absent = [f"{i}/{count}" for i in range(count) if i not in given]
    if absent:
        raise UsageError(f"shard{'s' if len(absent) > 1 else ''} {_names(absent, quote=False)} "
                         f"not given ({len(absent)} of {count} missing); pass every shard "
                         f"file of the run")


def _lacking(part: _Part, kind: Kind) -> list:
    """The items assigned to a shard that its file does not hold."""
    with kind.store(part.path, "r") as store:
        return [item for item in part.items if store.item_group(item) is None]


def _prepare_output(output: Store, attrs: dict) -> None:
    """Give a new output the shards' model records; refuse one made otherwise."""
    if _read_shard(output) is not None:
        raise UsageError(f"{output.path} is itself a shard file; merge into another file")
    current = _root_attrs(output)
    if current == attrs:
        return
    if has_entries(output.file):
        raise OutputMismatchError(
            f"{output.path} already holds results made otherwise than the shards' (its "
            f"records vs theirs: {_differences(current, attrs)}); merge into another file")
    for key, value in attrs.items():
        output.file.attrs[key] = value
    output.file.flush()


def merge_shards(output: str | Path, paths: Sequence[str | Path], allow_missing: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None) -> MergeReport:
    """Join the shard files `paths` (every shard of one run) into `output`, one item at a
    time (memory: one item), crash-safely and resumably (items already in `output` are
    skipped). Before writing anything, refuses (UsageError, OutputMismatchError) shards of
    different kinds, counts, item lists or models, overlapping or missing shards, items a
    shard lacks (an unfinished shard job; allow_missing merges the rest and reports them),
    and an output made with another model."""
    from tqdm import tqdm

    output = Path(output)
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("give at least one shard file")
    resolved = [p.resolve() for p in paths]
    if output.resolve() in resolved:
        raise UsageError(f"{output} is one of the shards; merge into another file")
    repeated = sorted({str(p) for p, r in zip(paths, resolved) if resolved.count(r) > 1})
    if repeated:
        raise UsageError(f"shard file given twice: {', '.join(repeated)}")
    parts = sorted(_open_parts(paths), key=lambda part: part.record["index"])
    _check_together(parts)
    kind = KINDS[parts[0].record["kind"]]
    report = MergeReport(kind.name, parts[0].record["total"])
    lacking = {part.path: _lacking(part, kind) for part in parts}
    report.missing = [item for items in lacking.values() for item in items]
    if report.missing and not allow_missing:
        path, items = next((p, i) for p, i in lacking.items() if i)
        part = next(part for part in parts if part.path == path)
        others = len(report.missing) - len(items)
        raise UsageError(
            f"{path} (shard {part.record['index']}/{part.record['count']}) lacks {len(items)} "
            f"of its {len(part.items)} items: {_names(items)}"
            + (f"; other shards lack {others} more" if others else "")
            + ". Its job did not finish: run it again (it resumes) and merge again, or pass "
              "--allow-missing to merge without them (e.g. images no run can read)")
    with kind.store(output) as target:
        _prepare_output(target, parts[0].attrs)
        with tqdm(total=report.total, desc="merge", unit="item",
                  disable=not progress) as bar:
            for part in parts:
                with kind.store(part.path, "r") as source:
                    for item in part.items:
                        group = source.item_group(item)
                        if group is not None and target.item_group(item) is None:
                            target.copy_group(group)
                            report.copied += 1
                        elif group is not None:
                            report.already += 1
                        bar.update(1)
    if log is not None and report.missing:
        log(f"merged without {len(report.missing)} item(s) no shard holds: "
            f"{_names(report.missing)}")
    return report
