"""`salvage`: rewrite a damaged HDF5 store keeping every item that still reads back intact."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py

from ..errors import StoreError
from .h5format import cleared_header, has_stale_write_flag, superblock
from .tree import WRITING, is_damaged, walk_items


def _storage_within(ds: h5py.Dataset, limit: int) -> bool:
    """True when every byte of the dataset's raw data lies below file offset `limit`."""
    dsid = ds.id
    layout = dsid.get_create_plist().get_layout()
    if layout == h5py.h5d.COMPACT:
        return True  # stored in the object header, which was read successfully
    if layout == h5py.h5d.CHUNKED:
        for i in range(dsid.get_num_chunks()):
            info = dsid.get_chunk_info(i)
            if info.byte_offset is None or info.byte_offset + info.size > limit:
                return False
        return True
    offset = dsid.get_offset()
    if offset is None:
        return dsid.get_storage_size() == 0 or ds.size == 0
    return offset + dsid.get_storage_size() <= limit


def _attrs(obj) -> dict:
    return {k: obj.attrs[k] for k in obj.attrs.keys()}


def _has_datasets(group: h5py.Group) -> bool:
    return any(group.get(k, getclass=True) is h5py.Dataset for k in group)


def _read_item(group: h5py.Group, limit: int) -> tuple[dict, dict]:
    """(attrs, {name: (array, attrs)}) of an item; raises when any part does not read back."""
    datasets = {}
    for key in group:
        obj = group[key]
        if isinstance(obj, h5py.Dataset):
            if not _storage_within(obj, limit):
                raise OSError("data past the end of the file")
            datasets[key] = (obj[()], _attrs(obj))
    return _attrs(group), datasets


def _copy_items(src: h5py.File, dst: h5py.File, limit: int) -> tuple[list[str], list[str]]:
    """Copy every intact item (a group holding datasets, whole or not at all) from src to dst;
    returns (kept, dropped) item paths."""
    try:
        for key, value in _attrs(src).items():
            if key != WRITING:
                dst.attrs[key] = value
    except Exception:
        pass  # the root's attributes are lost; the items may not be
    kept: list[str] = []
    dropped: list[str] = []
    for path, group in walk_items(src, _has_datasets, dropped):
        try:
            attrs, datasets = _read_item(group, limit)
        except Exception:
            dropped.append(path)
            continue
        out = dst.require_group(path)
        out.attrs.update(attrs)
        for key, (value, ds_attrs) in datasets.items():
            out.create_dataset(key, data=value).attrs.update(ds_attrs)
        kept.append(path)
    return sorted(kept), sorted(dropped)


def _backup_name(path: Path) -> Path:
    backup = path.with_name(path.name + ".corrupt")
    i = 0
    while backup.exists():
        i += 1
        backup = path.with_name(f"{path.name}.corrupt{i}")
    return backup


def salvage(path: str | os.PathLike) -> dict:
    """Rewrite a damaged HDF5 store keeping every item that still reads back intact.

    An item is a group holding datasets (an image's features, a pair's matches, ...). Items
    whose data lies past the end of a truncated file or that fail to read are dropped. The
    original file is kept as PATH.corrupt (PATH.corrupt1, ... if taken). Returns
    {"kept": [...], "dropped": [...], "backup": Path, "healthy": False}. A file that opens and
    whose objects all read is left alone: {"healthy": True, ...}.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    info = superblock(path)
    if info is None:
        raise StoreError(f"{path} is not an HDF5 file (no HDF5 signature): nothing to salvage")
    size = path.stat().st_size
    try:
        with h5py.File(path, "r", locking=False) as f:
            if not is_damaged(f):
                return {"healthy": True, "kept": [], "dropped": [], "backup": None}
    except OSError:
        pass  # does not even open: salvage below
    work = path.with_name(f".{path.name}.salvage-read.{os.getpid()}")
    out = path.with_name(f".{path.name}.salvage-write.{os.getpid()}")
    try:
        shutil.copyfile(path, work)
        if info["eof"] and info["eof"] + info["offset"] > size:
            os.truncate(work, info["eof"] + info["offset"])  # sparse zero padding
        if has_stale_write_flag(info):
            with open(work, "r+b") as fh:
                fh.seek(info["offset"])
                fh.write(cleared_header(info))
        try:
            src = h5py.File(work, "r", locking=False)
        except OSError as e:
            raise StoreError(f"{path}: HDF5 cannot read even the file's root ({e}); "
                             f"nothing can be salvaged") from None
        with src, h5py.File(out, "w", fs_strategy="none") as dst:  # see h5safe.open_h5
            kept, dropped = _copy_items(src, dst, size - info["offset"])
        if not kept:
            raise StoreError(
                f"{path}: no intact item could be read back (the file's index lies in its "
                f"damaged part); the file was left as it is. Delete it and re-run to recompute "
                f"its contents, or copy it again if it is an unfinished copy.")
        backup = _backup_name(path)
        os.replace(path, backup)
        os.replace(out, path)
        return {"healthy": False, "kept": kept, "dropped": dropped, "backup": backup}
    finally:
        for tmp in (work, out):
            if tmp.exists():
                tmp.unlink()
