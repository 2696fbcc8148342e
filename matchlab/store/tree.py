"""Walking the groups of an HDF5 file that may be damaged: every readable item, and the paths
of what could not be read."""
from __future__ import annotations

from typing import Callable, Iterator

import h5py

WRITING = "_matchlab_writing"  # on the root while a matchlab writer has the file open
BOOKKEEPING = ".matchlab"  # root entries named so are not results (a shard's record)


def has_entries(root: h5py.Group) -> bool:
    """Whether the root holds results, i.e. any entry but matchlab's bookkeeping ones: a file
    without is new, and takes the records of what makes its contents."""
    return any(not key.startswith(BOOKKEEPING) for key in root)


def walk_items(root: h5py.Group, is_item: Callable[[h5py.Group], bool],
               broken: list[str]) -> Iterator[tuple[str, h5py.Group]]:
    """(path, group) of every item below `root`, in no particular order.

    An item is a group for which `is_item` is true; other groups are walked into. Paths are
    relative to the root without a leading '/' (nested groups joined by '/'). Groups or members
    that fail to read (or whose `is_item` raises) are skipped and their paths appended to
    `broken` ('/' for the root itself).
    """
    stack: list[tuple[str, h5py.Group]] = [("", root)]
    while stack:
        prefix, group = stack.pop()
        try:
            keys = list(group.keys())
        except Exception:
            broken.append(prefix.rstrip("/") or "/")
            continue
        for key in keys:
            path = prefix + key
            try:
                obj = group[key]
                if not isinstance(obj, h5py.Group):
                    continue
                item = is_item(obj)
            except Exception:
                broken.append(path)
                continue
            if item:
                yield path, obj
            else:
                stack.append((path + "/", obj))


def is_damaged(file: h5py.File) -> bool:
    """Whether any object header below the root fails to read (HDF5's own walk, in C: about
    60 us per object, so a file of 100k images is checked in well under a minute)."""
    try:
        h5py.h5o.visit(file.id, lambda name, info: None, info=True)
        return False
    except Exception:
        return True


def short_list(names: list[str], limit: int = 3) -> str:
    """The first `limit` names, comma-separated, with ' ...' when there are more."""
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
