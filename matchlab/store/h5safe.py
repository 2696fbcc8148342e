"""Opening HDF5 files with errors that say what is wrong, and writing items crash-safely.

HDF5 itself is not crash-safe: it writes metadata whenever its cache evicts it, and reuses
freed space at once. So here the file on disk only changes at flushes, and an item is built
as an anonymous group (reachable from nowhere, so whatever a kill leaves of it is
invisible), flushed, then linked into its parent and flushed again (`Store._publish`): an
item is either absent or complete. New files never reuse freed space (fs_strategy="none")
and use the default (earliest) format. Files created with libver="latest", as hloc does,
keep a "file is open for writing" flag in their superblock that a killed writer leaves set,
after which HDF5 refuses to open them; when no live process holds the file's lock, that
stale flag is cleared on open (what `h5clear -s` does). A writer marks the root (`WRITING`)
while it has the file open; finding the mark on open means it was killed, and the file is
then checked, and salvaged (every intact item kept) if a kill in the middle of a flush
damaged it.
"""
from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from ..errors import StoreError
from .h5format import cleared_header, has_stale_write_flag, superblock
from .salvage import salvage
from .tree import WRITING, is_damaged, short_list, walk_items

try:
    import fcntl
except ImportError:  # Windows: no flock, stale-flag detection is skipped
    fcntl = None  # type: ignore[assignment]

_LOCKING = "best-effort"  # lock when the file system supports it, carry on when it does not


def _in_use(path: Path) -> StoreError:
    return StoreError(f"{path} is open for writing by another process; wait for it to finish "
                      f"(or stop it) and try again. The file itself is not damaged.")


def _clear_stale_write_flag(path: Path, info: dict) -> None:
    """Clear the 'open for writing' flag a killed writer left in a v3 superblock.

    Only done when no other process holds the file's lock (HDF5 takes a flock() while a file is
    open), i.e. when the flag is stale; otherwise the file is genuinely in use.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise StoreError(
            f"{path}: a process writing it was killed and left its 'file is open for writing' "
            f"flag set, and it cannot be cleared here ({e.strerror}); run `h5clear -s {path}` "
            f"(from the HDF5 tools) where the file is writable") from None
    try:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(path) from None
        except OSError:
            pass  # no flock on this file system: nothing can tell a live writer from a dead one
        os.pwrite(fd, cleared_header(info), info["offset"])
        os.fsync(fd)
        warnings.warn(f"{path}: cleared the 'file is open for writing' flag left by a process "
                      f"that was killed while writing it; its complete items are kept",
                      stacklevel=4)
    finally:
        os.close(fd)  # also releases the flock


def _not_writable(path: Path, what: str, error: OSError | None = None) -> StoreError:
    why = f" ({error.strerror})" if error is not None and error.strerror else ""
    return StoreError(f"cannot write {path}: {what}{why}. Its contents are not damaged; make it "
                      f"writable (check its owner and permissions) or choose another output path.")


def _check_writable(path: Path) -> None:
    """StoreError naming what blocks writing `path` (existing file, or its folder for a new
    one), before HDF5 reports it as an unreadable file."""
    if path.exists():
        if not os.access(path, os.W_OK):
            raise _not_writable(path, "the file is read-only (permission denied)")
        return
    folder = path.parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"cannot create {path}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _not_writable(path, f"its folder {folder} cannot be created", e) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _not_writable(path, f"its folder {folder} is not writable (permission denied)")


def open_h5(path: Path, mode: str) -> h5py.File:
    """h5py.File with errors that name the file and say what to do."""
    if mode not in ("r", "a"):
        raise ValueError(f"mode must be 'r' (read only) or 'a' (read and write), got {mode!r}")
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not an HDF5 file")
    if path.exists():
        if not os.access(path, os.R_OK):
            raise StoreError(f"cannot read {path}: permission denied. Its contents are not "
                             f"damaged; check its owner and permissions.")
        if path.stat().st_size == 0 and mode == "a":
            _check_writable(path)
            path.unlink()  # empty (made by `touch`, or killed at creation): start anew
        else:
            info = superblock(path)
            if info is None:
                raise StoreError(
                    f"{path} is not an HDF5 file (no HDF5 signature found; "
                    f"{path.stat().st_size} bytes). Delete it or choose another output path.")
            if has_stale_write_flag(info):  # HDF5 enforces the flags from v3 on
                _clear_stale_write_flag(path, info)
    elif mode == "r":
        raise StoreError(f"{path}: no such file")
    if mode == "a":
        _check_writable(path)
    # New files allocate all space at the end of the file and never reuse freed space
    # (fs_strategy="none"): HDF5 otherwise may put new data where a structure that the file
    # on disk still points to used to be, which a kill before the next flush turns into a
    # damaged file. The cost is the space of deleted items, which are rare here.
    create = {} if path.exists() else {"fs_strategy": "none"}
    try:
        return h5py.File(path, "x" if create else mode, locking=_LOCKING, **create)
    except OSError as e:
        raise _open_error(path, e) from None


def _open_error(path: Path, error: OSError) -> StoreError:
    """What HDF5's refusal to open `path` means, and what to do; "damaged" only when it is."""
    msg = str(error)
    code = error.errno
    if code is None:  # HDF5 puts the system's error number in its message
        found = re.search(r"errno = (\d+)", msg)
        code = int(found.group(1)) if found else None
    if "unable to lock" in msg.lower() or code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return _in_use(path)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _not_writable(path, "permission denied" if code != errno.EROFS
                             else "the file system is read-only")
    if code in (errno.ENOENT, errno.EEXIST):
        return StoreError(f"{path} was created or removed by another process while this one "
                          f"opened it ({msg}); run again once that process has finished")
    if "truncated file" in msg:
        info = superblock(path) or {}
        return StoreError(
            f"{path} is truncated: it has {path.stat().st_size} bytes but its header says "
            f"{info.get('eof', '?')}. This happens when a copy or download did not finish or "
            f"the disk filled up while it was written. Copy it again if it is a copy; otherwise "
            f"`matchlab salvage {path}` keeps the items that are still intact (the damaged file "
            f"is kept as {path}.corrupt), or delete it and re-run to recompute everything.")
    return StoreError(
        f"cannot open {path} as HDF5 ({msg}); it is probably damaged. To keep the items that "
        f"are still intact, run `matchlab salvage {path}`; or delete it to start over.")


class Store:
    """An open HDF5 file: context manager, crash-safe item writes, clear errors.

    Subclasses name `item_dataset`, the dataset whose presence makes a group an item.
    """

    item_dataset: str = ""

    def __init__(self, path: str | os.PathLike, mode: str = "a") -> None:
        self.path = Path(path)
        self.mode = mode
        self._file: h5py.File | None = None
        self._file = open_h5(self.path, mode)
        if mode == "a":
            try:
                config = self._file.id.get_mdc_config()
                self._mdc_modes = (config.incr_mode, config.decr_mode, config.flash_incr_mode)
                self._mdc_size = config.initial_size  # bytes the cache shrinks to after an item
                if WRITING in self._file.attrs:  # the last writer was killed: check, repair
                    self._repair_after_crash()
                self._file.attrs[WRITING] = 1
                self._file.flush()
            except BaseException:
                self.close()
                raise

    @property
    def file(self) -> h5py.File:
        if self._file is None or not self._file.id.valid:
            raise StoreError(f"{self.path} is closed")
        return self._file

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            try:
                if self.mode == "a" and WRITING in self._file.attrs:
                    del self._file.attrs[WRITING]
            finally:
                self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._file is None else self.mode
        return f"{type(self).__name__}({str(self.path)!r}, {state})"

    # -- crash recovery
    def _repair_after_crash(self) -> None:
        """The previous writer died (SIGKILL, power loss) with the file open.

        The item it was writing is absent (see `_publish`) and is simply written again. This
        checks that nothing else was hurt (a kill in the middle of HDF5's flush of a link can
        leave a parent group half updated) and, if something was, salvages the file: every
        intact item is kept, the damaged original is kept beside it.
        """
        if not is_damaged(self.file):
            return
        self._file.close()
        report = salvage(self.path)
        warnings.warn(f"{self.path} was damaged when the previous run was killed: salvaged "
                      f"{len(report['kept'])} intact items, dropped {len(report['dropped'])} "
                      f"({short_list(report['dropped'])}; recomputed by this run); the damaged "
                      f"file is kept as {report['backup']} and can be deleted", stacklevel=4)
        self._file = open_h5(self.path, "a")

    # -- items
    def _item(self, key: str) -> h5py.Group | None:
        """The item group at `key`, or None (absent, not an item, or unreadable)."""
        try:
            obj = self.file.get(key)
            if not isinstance(obj, h5py.Group):
                return None
            if self.item_dataset not in obj:
                return None
            return obj
        except (KeyError, OSError, RuntimeError, ValueError):
            return None

    def item_group(self, item) -> h5py.Group | None:
        """The group of `item` (its key here; a pair of names in a MatchStore), or None."""
        return self._item(item)

    def write_group(self, key: str, datasets: dict, attrs: dict | None = None,
                    overwrite: bool = False) -> bool:
        """Write a group of datasets at `key` crash-safely (absent or complete after a kill);
        False when an item is there already and not `overwrite`. datasets: {name: array or
        (array, {attribute: value})}; attrs: the group's attributes."""
        return self._write_item(key, datasets, overwrite=overwrite, attrs=attrs)

    def copy_group(self, group: h5py.Group) -> bool:
        """A copy of another file's item `group` (datasets with their attributes, the group's
        attributes) at the same key here, crash-safely; False when already there."""
        datasets = {name: (obj[()], dict(obj.attrs)) for name, obj in group.items()}
        return self.write_group(group.name.lstrip("/"), datasets, attrs=dict(group.attrs))

    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path} was opened read-only (mode='r')")

    def _hold_metadata(self, hold: bool) -> None:
        """Keep (hold=True) every metadata change in memory until the next flush.

        HDF5 otherwise writes metadata whenever its cache evicts an entry, which can put on
        disk half of an item's structure (a link to an object not yet written) at any time.

        Releasing (hold=False, after the item's last flush, when every entry is clean) also
        shrinks the cache back to its initial size. HDF5 evicts only when an entry is added
        to a full cache or when its size limit has just been lowered; entries are added only
        while held, so without the lowering the cache kept every entry of every item written
        (about 1.7 kB of entries, 14 kB of memory per item: gigabytes at 10^5 items).
        """
        config = self.file.id.get_mdc_config()
        config.set_initial_size = True  # the limit is raised while held, lowered on release
        if hold:
            config.evictions_enabled = False
            config.incr_mode = config.decr_mode = config.flash_incr_mode = 0  # required off
            config.initial_size = config.max_size
        else:
            config.evictions_enabled = True
            config.incr_mode, config.decr_mode, config.flash_incr_mode = self._mdc_modes
            config.initial_size = self._mdc_size
        self.file.id.set_mdc_config(config)
        if not hold:
            _ = WRITING in self.file.attrs  # any metadata access evicts down to the new limit

    def _publish(self, parent: h5py.Group, leaf: str, build: Callable[[h5py.Group], None]) -> None:
        """Create group `parent/leaf` so that a kill at any moment leaves it absent or whole.

        HDF5 writes nothing to disk between flushes here (`_hold_metadata`), and reuses freed
        space at once, so the order is: 1. build the group ANONYMOUSLY (linked from nowhere:
        whatever a kill leaves of it is unreachable) and flush; 2. link it into its parent,
        the only change to a structure the file on disk depends on, and flush.
        """
        group = h5py.Group(h5py.h5g.create(self.file.id, None))
        build(group)
        self.file.flush()  # 1
        parent[leaf] = group
        self.file.flush()  # 2

    def _require_group(self, name: str) -> h5py.Group:
        """The group at `name` ('' for the root), creating missing levels one by one."""
        group = self.file["/"]
        for part in [p for p in name.split("/") if p]:
            if part not in group:
                self._publish(group, part, lambda g: None)
            group = group[part]
            if not isinstance(group, h5py.Group):
                raise StoreError(f"{self.path}: {group.name} is a dataset, not a group")
        return group

    def _write_item(self, key: str, datasets: dict, overwrite: bool,
                    attrs: dict | None = None) -> bool:
        """Write one item crash-safely (`_publish`); False if it is already there.

        datasets: {name: array or (array, {attribute: value})}; attrs: the item's attributes.
        """
        self._require_writable()
        if self._item(key) is not None and not overwrite:
            return False

        def build(group: h5py.Group) -> None:
            group.attrs.update(attrs or {})
            for name, value in datasets.items():
                value, ds_attrs = value if isinstance(value, tuple) else (value, {})
                group.create_dataset(name, data=value).attrs.update(ds_attrs)

        self._hold_metadata(True)
        try:
            parent_name, _, leaf = key.rpartition("/")
            parent = self._require_group(parent_name)
            if leaf in parent:  # overwrite=True, or something that is not a readable item
                if self._item(key) is None and _holds_groups(parent, leaf):
                    raise StoreError(f"{self.path}: {key!r} is a folder of other entries; an "
                                     f"item cannot have the same name")
                try:
                    del parent[leaf]
                except (KeyError, OSError, RuntimeError) as e:
                    raise StoreError(f"{self.path}: the entry {key!r} is damaged and cannot be "
                                     f"replaced ({e}); run `matchlab salvage {self.path}`"
                                     ) from None
                self.file.flush()  # the removal is on disk before its space can be reused
            self._publish(parent, leaf, build)
        finally:
            self._hold_metadata(False)
        return True

    def _walk(self) -> list[str]:
        """Sorted names of the complete items; unreadable parts are skipped with a warning."""
        broken: list[str] = []
        names = sorted(path for path, _ in walk_items(
            self.file, lambda group: self.item_dataset in group, broken))
        if broken:
            warnings.warn(f"{self.path}: skipped unreadable entries {broken[:5]}"
                          f"{' ...' if len(broken) > 5 else ''}; `matchlab salvage {self.path}` "
                          f"rewrites the file without them", stacklevel=3)
        return names

    def _read(self, group: h5py.Group, key: str) -> np.ndarray:
        try:
            return group[key][()]
        except Exception as e:
            raise StoreError(f"{self.path}: cannot read {group.name}/{key} ({e}); the file may be "
                             f"damaged, see `matchlab salvage {self.path}`") from None


def _holds_groups(parent: h5py.Group, leaf: str) -> bool:
    try:
        obj = parent[leaf]
        return isinstance(obj, h5py.Group) and any(
            obj.get(k, getclass=True) is h5py.Group for k in obj)
    except Exception:
        return False  # unreadable: replacing it is what the caller wants
