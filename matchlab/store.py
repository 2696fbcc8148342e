"""HDF5 stores for local features, matches and global descriptors, in hloc's layout.

Files written here are read by hloc unchanged, and files written by hloc (or by any tool using
its layout) are read here:

features.h5   one group per image name ('db/1.jpg' -> nested groups 'db' -> '1.jpg'):
              keypoints [N, 2] float32 (original-image pixels, (0, 0) = centre of the top-left
              pixel), descriptors [D, N] (hloc's transposed layout), scores [N], image_size
              (W, H) int64; with affine frames also lafs [N, 2, 3] float32, scales [N] (px) and
              oris [N] (DEGREES, as hloc's SIFT writes them; attribute units="degrees").
              Detection scores are written as `scores` (hloc's SuperPoint name, the one hloc's
              SuperGlue needs); `keypoint_scores` (hloc's DISK / ALIKED name) is read too.
              `as_half=True` stores descriptors and scores as float16; keypoints and frames
              stay float32 (hloc also halves keypoints: 2 px steps above x = 2048).
matches.h5    group `names_to_pair(n0, n1)` = 'n0/n1' with '/' inside names replaced by '-':
              matches0 [N0] int32 (index in image 1 or -1) and matching_scores0 [N0]. hloc writes
              int16, which wraps for indices >= 32768; such files are unwrapped on read (exact
              below 65535 keypoints). The old '_' separator is read too. A pair is stored once:
              (n1, n0) counts as present for (n0, n1) and reads back flipped.
global.h5     one group per image name holding global_descriptor [D].

Crash safety: a run killed at any moment (SIGKILL included) leaves a file the next run opens
and completes. HDF5 itself is not crash-safe: it writes metadata whenever its cache evicts
it, and reuses freed space at once. So here the file on disk only changes at flushes, and an
item is built as an anonymous group (reachable from nowhere, so whatever a kill leaves of it
is invisible), flushed, then linked into its parent and flushed again (`_Store._publish`):
an item is either absent or complete. New files never reuse freed space
(fs_strategy="none") and use the default (earliest) format. Files created with
libver="latest", as hloc does, keep a "file is open for writing" flag in their superblock
that a killed writer leaves set, after which HDF5 refuses to open them; when no live process
holds the file's lock, that stale flag is cleared on open (what `h5clear -s` does). A writer
marks the root (`_matchlab_writing`) while it has the file open; finding the mark on open
means it was killed, and the file is then checked, and salvaged (every intact item kept) if
a kill in the middle of a flush damaged it.

A file that HDF5 cannot open at all (truncated by a full disk or an unfinished copy, or
otherwise damaged) raises `StoreError` naming it and saying what to do. `salvage(path)` (or
`matchlab salvage PATH`) copies every item that still reads back intact into a fresh file and
keeps the damaged one as PATH.corrupt; when the file's index of items is itself lost (HDF5
keeps it near the end of the file, so most truncations lose it) it says so and changes
nothing. Salvage is automatic only for damage a killed matchlab writer left (the root mark
above says so); a file that does not open is never salvaged implicitly: it may be an
unfinished copy of a good one, and silently shrinking it would hide that.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np
import torch
from torch import Tensor

from .errors import MissingItemError, StoreError
from .types import Features, Matches, ShapeError

try:
    import fcntl
except ImportError:  # Windows: no flock, stale-flag detection is skipped
    fcntl = None  # type: ignore[assignment]

WRITING = "_matchlab_writing"  # on the root while a matchlab writer has the file open
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LOCKING = "best-effort"  # lock when the file system supports it, carry on when it does not


# ----------------------------------------------------------------------------- pair keys

def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's key of a pair in matches.h5: '/' inside names becomes '-', joined by `separator`."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def names_to_pair_old(name0: str, name1: str) -> str:
    """The key older hloc versions wrote (and hloc's README still documents): '_' separator."""
    return names_to_pair(name0, name1, separator="_")


# ----------------------------------------------------------------------------- low-level file access

def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle`, the checksum of HDF5 metadata (H5_checksum_lookup3)."""
    mask = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & mask

    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & mask
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & mask
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & mask
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & mask
        a = (a - c) & mask; a ^= rot(c, 4); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= rot(a, 6); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= rot(b, 8); b = (b + a) & mask  # noqa: E702
        a = (a - c) & mask; a ^= rot(c, 16); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= rot(a, 19); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= rot(b, 4); b = (b + a) & mask  # noqa: E702
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & mask
    b = (b + int.from_bytes(tail[4:8], "little")) & mask
    c = (c + int.from_bytes(tail[8:12], "little")) & mask
    c ^= b; c = (c - rot(b, 14)) & mask  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & mask  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & mask  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & mask  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & mask  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & mask  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & mask  # noqa: E702
    return c


def _superblock(path: Path) -> dict | None:
    """Location, version, consistency flags and stored end-of-file of an HDF5 superblock.

    None when no HDF5 signature is found (at 0, 512, 1024, ... as the format allows).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(96)
            if head[:8] == _SIGNATURE:
                break
            offset = 512 if offset == 0 else offset * 2
        else:
            return None
    version = head[8]
    info = {"offset": offset, "version": version, "flags": 0, "eof": None}
    if version in (2, 3):
        sizeof_addr = head[9]
        info["flags"] = head[11]
        info["eof"] = int.from_bytes(head[12 + 2 * sizeof_addr:12 + 3 * sizeof_addr], "little")
        info["header"] = head[:12 + 4 * sizeof_addr + 4]
    elif version in (0, 1):
        sizeof_addr = head[13]
        start = 24 + (4 if version == 1 else 0) + 2 * sizeof_addr
        info["eof"] = int.from_bytes(head[start:start + sizeof_addr], "little")
    return info


def _clear_stale_write_flag(path: Path, info: dict) -> None:
    """Clear the 'open for writing' flag a killed writer left in a v2/v3 superblock.

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
            raise StoreError(f"{path} is open for writing by another process; wait for it to "
                             f"finish (or stop it) and try again") from None
        except OSError:
            pass  # no flock on this file system: nothing can tell a live writer from a dead one
        header = bytearray(info["header"])
        header[11] = 0
        header[-4:] = _lookup3(bytes(header[:-4])).to_bytes(4, "little")
        os.pwrite(fd, bytes(header), info["offset"])
        os.fsync(fd)
        warnings.warn(f"{path}: cleared the 'file is open for writing' flag left by a process "
                      f"that was killed while writing it; its complete items are kept",
                      stacklevel=4)
    finally:
        os.close(fd)  # also releases the flock


def _open_h5(path: Path, mode: str) -> h5py.File:
    """h5py.File with errors that name the file and say what to do."""
    if mode not in ("r", "a"):
        raise ValueError(f"mode must be 'r' (read only) or 'a' (read and write), got {mode!r}")
    if path.exists():
        if path.is_dir():
            raise StoreError(f"{path} is a folder, not an HDF5 file")
        if path.stat().st_size == 0 and mode == "a":
            path.unlink()  # empty (made by `touch`, or killed at creation): start anew
        else:
            info = _superblock(path)
            if info is None:
                raise StoreError(
                    f"{path} is not an HDF5 file (no HDF5 signature found; "
                    f"{path.stat().st_size} bytes). Delete it or choose another output path.")
            if info["flags"] and info["version"] == 3:  # HDF5 enforces the flags from v3 on
                _clear_stale_write_flag(path, info)
    elif mode == "r":
        raise StoreError(f"{path}: no such file")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
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
    msg = str(error)
    if "truncated file" in msg:
        info = _superblock(path) or {}
        return StoreError(
            f"{path} is truncated: it has {path.stat().st_size} bytes but its header says "
            f"{info.get('eof', '?')}. This happens when a copy or download did not finish or "
            f"the disk filled up while it was written. Copy it again if it is a copy; otherwise "
            f"`matchlab salvage {path}` keeps the items that are still intact (the damaged file "
            f"is kept as {path}.corrupt), or delete it and re-run to recompute everything.")
    if "unable to lock" in msg.lower():
        return StoreError(f"{path} is in use by another process (HDF5 says: {msg}); wait for it "
                          f"to finish and try again")
    return StoreError(
        f"cannot open {path} as HDF5 ({msg}); it is probably damaged. To keep the items that "
        f"are still intact, run `matchlab salvage {path}`; or delete it to start over.")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/") \
            or any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"invalid image name {name!r}: use a relative path such as 'db/1.jpg'")
    return name


def _to_numpy(x: Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


class _Store:
    """An open HDF5 file: context manager, crash-safe item writes, clear errors."""

    item_dataset: str = ""  # the dataset whose presence makes a group an item

    def __init__(self, path: str | os.PathLike, mode: str = "a") -> None:
        self.path = Path(path)
        self.mode = mode
        self._file: h5py.File | None = None
        self._file = _open_h5(self.path, mode)
        if mode == "a":
            try:
                config = self._file.id.get_mdc_config()
                self._mdc_modes = (config.incr_mode, config.decr_mode, config.flash_incr_mode)
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
        if not _is_damaged(self.file):
            return
        self._file.close()
        report = salvage(self.path)
        warnings.warn(f"{self.path} was damaged when the previous run was killed: salvaged "
                      f"{len(report['kept'])} intact items, dropped {len(report['dropped'])} "
                      f"({_short(report['dropped'])}; recomputed by this run); the damaged file "
                      f"is kept as {report['backup']} and can be deleted", stacklevel=4)
        self._file = _open_h5(self.path, "a")

    # -- items
    def _item(self, key: str, item_dataset: str | None = None) -> h5py.Group | None:
        """The item group at `key`, or None (absent, not an item, or unreadable)."""
        try:
            obj = self.file.get(key)
            if not isinstance(obj, h5py.Group):
                return None
            if (item_dataset or self.item_dataset) not in obj:
                return None
            return obj
        except (KeyError, OSError, RuntimeError, ValueError):
            return None

    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path} was opened read-only (mode='r')")

    def _hold_metadata(self, hold: bool) -> None:
        """Keep (hold=True) every metadata change in memory until the next flush.

        HDF5 otherwise writes metadata whenever its cache evicts an entry, which can put on
        disk half of an item's structure (a link to an object not yet written) at any time.
        """
        config = self.file.id.get_mdc_config()
        if hold:
            config.evictions_enabled = False
            config.incr_mode = config.decr_mode = config.flash_incr_mode = 0  # required off
        else:
            config.evictions_enabled = True
            config.incr_mode, config.decr_mode, config.flash_incr_mode = self._mdc_modes
        self.file.id.set_mdc_config(config)

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

    def _write_item(self, key: str, datasets: dict, overwrite: bool) -> bool:
        """Write one item crash-safely (`_publish`); False if it is already there."""
        self._require_writable()
        if self._item(key) is not None and not overwrite:
            return False

        def build(group: h5py.Group) -> None:
            for name, value in datasets.items():
                value, attrs = value if isinstance(value, tuple) else (value, {})
                ds = group.create_dataset(name, data=value)
                for k, v in attrs.items():
                    ds.attrs[k] = v

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
        """Names of the complete items, walking nested groups; unreadable parts are skipped."""
        names: list[str] = []
        broken: list[str] = []

        def visit(group: h5py.Group, prefix: str) -> None:
            try:
                keys = list(group.keys())
            except Exception:
                broken.append(prefix or "/")
                return
            for key in keys:
                path = f"{prefix}{key}"
                try:
                    obj = group[key]
                    if not isinstance(obj, h5py.Group):
                        continue
                    is_item = self.item_dataset in obj
                except Exception:
                    broken.append(path)
                    continue
                if is_item:
                    names.append(path)
                else:
                    visit(obj, path + "/")

        visit(self.file, "")
        if broken:
            warnings.warn(f"{self.path}: skipped unreadable entries {broken[:5]}"
                          f"{' ...' if len(broken) > 5 else ''}; `matchlab salvage {self.path}` "
                          f"rewrites the file without them", stacklevel=3)
        return sorted(names)

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
            isinstance(obj.get(k, getclass=True), type) and
            issubclass(obj.get(k, getclass=True), h5py.Group) for k in obj)
    except Exception:
        return False  # unreadable: replacing it is what the caller wants


def _is_damaged(file: h5py.File) -> bool:
    """Whether any object header below the root fails to read (HDF5's own walk, in C: about
    60 us per object, so a file of 100k images is checked in well under a minute)."""
    try:
        h5py.h5o.visit(file.id, lambda name, info: None, info=True)
        return False
    except Exception:
        return True


def _short(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


class _ImageStore(_Store):
    """Items keyed by image name (nested groups for names with '/')."""

    def names(self) -> list[str]:
        """Sorted names of the images with a complete entry."""
        return self._walk()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._item(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _get(self, name: str) -> h5py.Group:
        group = self._item(name)
        if group is None:
            raise MissingItemError(f"image {name!r} is not in {self.path}")
        return group


class FeatureStore(_ImageStore):
    """features.h5 in hloc's layout. `mode='a'` reads and writes (creating the file if
    needed), `mode='r'` only reads (and lets other readers open the file at the same time).

        with FeatureStore("features.h5") as store:
            store.write("db/1.jpg", features)     # skipped (returns False) if already there
            features = store.read("db/1.jpg")
    """

    item_dataset = "keypoints"

    def write(self, name: str, features: Features, as_half: bool = False,
              overwrite: bool = False) -> bool:
        """Store `features` under `name`; False (and nothing written) if already present."""
        _check_name(name)
        if not isinstance(features, Features):
            raise TypeError(f"expected Features, got {type(features).__name__}")
        floats = np.float16 if as_half else np.float32
        data: dict = {
            "keypoints": _to_numpy(features.keypoints, np.float32),
            "descriptors": _to_numpy(features.descriptors, floats).T,
            "scores": _to_numpy(features.scores, floats),
            "image_size": np.asarray(features.image_size, dtype=np.int64),
        }
        if features.lafs is not None:
            from .geometry.laf import scale_ori_from_lafs

            lafs = features.lafs.detach().cpu().float()
            scales, oris = scale_ori_from_lafs(lafs)
            data["lafs"] = lafs.numpy()
            data["scales"] = (scales.numpy().astype(np.float32), {"units": "pixels"})
            data["oris"] = (np.rad2deg(oris.numpy()).astype(np.float32), {"units": "degrees"})
        return self._write_item(name, data, overwrite)

    def read(self, name: str) -> Features:
        """The Features stored under `name` (float32, descriptors [N, D])."""
        group = self._get(name)
        keypoints = self._read(group, "keypoints").astype(np.float32).reshape(-1, 2)
        n = len(keypoints)
        descriptors = self._read(group, "descriptors") if "descriptors" in group \
            else np.zeros((0, n), np.float32)
        if descriptors.ndim != 2:
            raise StoreError(f"{self.path}: {name!r} has descriptors of shape {descriptors.shape}")
        if descriptors.shape[1] != n and descriptors.shape[0] == n:
            pass  # stored [N, D] by a non-hloc writer
        elif descriptors.shape[1] == n:
            descriptors = descriptors.T  # hloc's [D, N]
        else:
            raise StoreError(f"{self.path}: {name!r} has {n} keypoints but descriptors of shape "
                             f"{descriptors.shape}")
        for key in ("scores", "keypoint_scores"):
            if key in group:
                scores = self._read(group, key).astype(np.float32).reshape(-1)
                break
        else:
            scores = np.ones(n, np.float32)
        if "image_size" not in group:
            raise StoreError(f"{self.path}: {name!r} has no image_size (W, H); every hloc "
                             f"extractor writes one, so the file was made by another tool")
        image_size = tuple(int(v) for v in self._read(group, "image_size").reshape(-1)[:2])
        lafs = None
        if "lafs" in group:
            lafs = torch.from_numpy(self._read(group, "lafs").astype(np.float32).reshape(-1, 2, 3))
        elif "scales" in group and "oris" in group:
            from .geometry.laf import lafs_from_scale_ori

            oris = self._read(group, "oris").astype(np.float64).reshape(-1)
            if group["oris"].attrs.get("units", "degrees") != "radians":
                oris = np.deg2rad(oris)  # hloc's SIFT stores degrees
            lafs = lafs_from_scale_ori(
                torch.from_numpy(keypoints).double(),
                torch.from_numpy(self._read(group, "scales").astype(np.float64).reshape(-1)),
                torch.from_numpy(oris)).float()
        try:
            return Features(
                keypoints=torch.from_numpy(keypoints),
                descriptors=torch.from_numpy(np.ascontiguousarray(descriptors, np.float32)),
                scores=torch.from_numpy(scores), image_size=image_size, lafs=lafs)
        except ShapeError as e:
            raise StoreError(f"{self.path}: {name!r} is inconsistent: {e}") from None

    def read_keypoints(self, name: str) -> np.ndarray:
        """Keypoints [N, 2] float32 of `name`, without reading its descriptors."""
        return self._read(self._get(name), "keypoints").astype(np.float32).reshape(-1, 2)

    def num_keypoints(self, name: str) -> int:
        return int(self._get(name)["keypoints"].shape[0])


class GlobalStore(_ImageStore):
    """global-feats.h5 in hloc's layout: one `global_descriptor` [D] per image name."""

    item_dataset = "global_descriptor"

    def write(self, name: str, descriptor: Tensor | np.ndarray, as_half: bool = False,
              overwrite: bool = False) -> bool:
        _check_name(name)
        array = _to_numpy(descriptor, np.float16 if as_half else np.float32)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 1:
            raise ShapeError(f"global descriptor of {name!r} must be [D], got {array.shape}")
        return self._write_item(name, {"global_descriptor": array}, overwrite)

    def read(self, name: str) -> Tensor:
        """The descriptor [D] float32 of `name`."""
        array = self._read(self._get(name), "global_descriptor")
        return torch.from_numpy(array.astype(np.float32).reshape(-1))

    def read_many(self, names: Iterable[str]) -> Tensor:
        """Descriptors [len(names), D] float32, in the order given."""
        rows = [self.read(n) for n in names]
        if not rows:
            return torch.zeros((0, 0))
        return torch.stack(rows)


class MatchStore(_Store):
    """matches.h5 in hloc's layout.

        with MatchStore("matches.h5") as store:
            store.write("a.jpg", "b.jpg", matches)   # skipped if (a, b) or (b, a) is there
            idx, scores = store.read_pairs("b.jpg", "a.jpg")   # flipped: [M, 2] (i_b, i_a)
    """

    item_dataset = "matches0"

    def _find(self, name0: str, name1: str) -> tuple[h5py.Group, bool] | None:
        """(group, reversed) for the pair in either order, with either separator (as hloc)."""
        for key, flipped in ((names_to_pair(name0, name1), False),
                             (names_to_pair(name1, name0), True),
                             (names_to_pair_old(name0, name1), False),
                             (names_to_pair_old(name1, name0), True)):
            group = self._item(key)
            if group is not None:
                return group, flipped
        return None

    def __contains__(self, pair: object) -> bool:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return False
        return self._find(*pair) is not None

    def write(self, name0: str, name1: str, matches: Matches, as_half: bool = False,
              overwrite: bool = False) -> bool:
        """Store matches image0 -> image1; False (nothing written) if the pair is present in
        either order. With overwrite=True an existing entry (in either order) is replaced."""
        _check_name(name0)
        _check_name(name1)
        if not isinstance(matches, Matches):
            raise TypeError(f"expected Matches, got {type(matches).__name__}")
        found = self._find(name0, name1)
        if found is not None:
            if not overwrite:
                return False
            self._require_writable()
            del self.file[found[0].name]
            self.file.flush()
        m0 = matches.matches0.detach().cpu().numpy()
        if m0.size and (m0.min() < -1 or m0.max() > np.iinfo(np.int32).max):
            raise ShapeError(f"matches0 of ({name0!r}, {name1!r}) has values outside "
                             f"[-1, 2^31): min {m0.min()}, max {m0.max()}")
        data = {"matches0": m0.astype(np.int32),
                "matching_scores0": _to_numpy(matches.scores0,
                                              np.float16 if as_half else np.float32)}
        return self._write_item(names_to_pair(name0, name1), data, overwrite=True)

    def read_pairs(self, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
        """(idx [M, 2] int64 with columns (index in name0, index in name1), scores [M] float32),
        sorted by the first column; flipped when the file holds the pair as (name1, name0)."""
        found = self._find(name0, name1)
        if found is None:
            raise MissingItemError(
                f"pair ({name0!r}, {name1!r}) is not in {self.path} (looked for "
                f"{names_to_pair(name0, name1)!r}, {names_to_pair(name1, name0)!r} and their "
                f"old '_'-separated forms)")
        group, flipped = found
        m0 = self._read(group, "matches0").reshape(-1)
        if m0.dtype == np.int16:  # hloc's .short(): indices 32768..65534 wrapped to negatives
            m0 = m0.astype(np.int64)
            m0[m0 < -1] += 1 << 16
        m0 = m0.astype(np.int64)
        if "matching_scores0" in group:
            s0 = self._read(group, "matching_scores0").astype(np.float32).reshape(-1)
        else:
            s0 = np.ones(len(m0), np.float32)
        valid = np.nonzero(m0 > -1)[0]
        idx = np.stack([valid, m0[valid]], -1).astype(np.int64).reshape(-1, 2)
        scores = s0[valid]
        if flipped:
            idx = idx[:, ::-1]
            order = np.argsort(idx[:, 0], kind="stable")
            idx, scores = idx[order], scores[order]
        return np.ascontiguousarray(idx), np.ascontiguousarray(scores)


# ----------------------------------------------------------------------------- salvage

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


def salvage(path: str | os.PathLike) -> dict:
    """Rewrite a damaged HDF5 store keeping every item that still reads back intact.

    An item is a group holding datasets (an image's features, a pair's matches, ...). Items
    whose data lies past the end of a truncated file or that fail to read are dropped. The original file is kept as PATH.corrupt
    (PATH.corrupt1, ... if taken). Returns {"kept": [...], "dropped": [...], "backup": Path}.
    A file that opens and whose objects all read is left alone: {"healthy": True, ...}.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    info = _superblock(path)
    if info is None:
        raise StoreError(f"{path} is not an HDF5 file (no HDF5 signature): nothing to salvage")
    size = path.stat().st_size
    try:
        with h5py.File(path, "r", locking=False) as f:
            if not _is_damaged(f):
                return {"healthy": True, "kept": [], "dropped": [], "backup": None}
    except OSError:
        pass  # does not even open: salvage below
    work = path.with_name(f".{path.name}.salvage-read.{os.getpid()}")
    out = path.with_name(f".{path.name}.salvage-write.{os.getpid()}")
    kept: list[str] = []
    dropped: list[str] = []
    try:
        shutil.copyfile(path, work)
        if info["eof"] and info["eof"] + info["offset"] > size:
            os.truncate(work, info["eof"] + info["offset"])  # sparse zero padding
        if info["flags"] and info["version"] == 3:
            header = bytearray(info["header"])
            header[11] = 0
            header[-4:] = _lookup3(bytes(header[:-4])).to_bytes(4, "little")
            with open(work, "r+b") as fh:
                fh.seek(info["offset"])
                fh.write(header)
        try:
            src = h5py.File(work, "r", locking=False)
        except OSError as e:
            raise StoreError(f"{path}: HDF5 cannot read even the file's root ({e}); "
                             f"nothing can be salvaged") from None
        limit = size - info["offset"]
        with src, h5py.File(out, "w", fs_strategy="none") as dst:  # see _open_h5
            for key, value in (_safe_attrs(src) or {}).items():
                if key != WRITING:
                    dst.attrs[key] = value

            def visit(group: h5py.Group, prefix: str) -> None:
                try:
                    keys = list(group.keys())
                except Exception:
                    dropped.append((prefix or "/") + "*")
                    return
                datasets, groups, broken = {}, [], []
                for key in keys:
                    try:
                        obj = group[key]
                        if isinstance(obj, h5py.Dataset):
                            if not _storage_within(obj, limit):
                                raise OSError("data past the end of the file")
                            datasets[key] = (obj[()], _safe_attrs(obj, strict=True))
                        else:
                            groups.append(obj)
                    except Exception:
                        broken.append(prefix + key)
                if datasets:  # an item: kept whole or not at all
                    item = prefix.rstrip("/") or "/"
                    attrs = _safe_attrs(group)
                    if broken or attrs is None:
                        dropped.append(item)
                    else:
                        g = dst.require_group(item) if item != "/" else dst
                        for k, v in attrs.items():
                            g.attrs[k] = v
                        for key, (value, ds_attrs) in datasets.items():
                            ds = g.create_dataset(key, data=value)
                            for k, v in ds_attrs.items():
                                ds.attrs[k] = v
                        kept.append(item)
                else:
                    dropped.extend(broken)
                for sub in groups:
                    visit(sub, sub.name.lstrip("/") + "/")

            visit(src, "")
        if not kept:
            raise StoreError(
                f"{path}: no intact item could be read back (the file's index lies in its "
                f"damaged part); the file was left as it is. Delete it and re-run to recompute "
                f"its contents, or copy it again if it is an unfinished copy.")
        backup = path.with_name(path.name + ".corrupt")
        i = 0
        while backup.exists():
            i += 1
            backup = path.with_name(f"{path.name}.corrupt{i}")
        os.replace(path, backup)
        os.replace(out, path)
        return {"healthy": False, "kept": sorted(kept), "dropped": sorted(dropped),
                "backup": backup}
    finally:
        for tmp in (work, out):
            if tmp.exists():
                tmp.unlink()


def _safe_attrs(obj, strict: bool = False) -> dict | None:
    try:
        return {k: obj.attrs[k] for k in obj.attrs.keys()}
    except Exception:
        if strict:
            raise
        return None
