"""Byte-level facts about HDF5 files that h5py does not expose: the superblock and its checksum.

Used to tell a truncated file from a damaged one, and to clear the "file is open for
writing" flag that a killed writer leaves in a version 3 superblock (what `h5clear -s` does).
"""
from __future__ import annotations

from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle`, the checksum of HDF5 metadata (H5_checksum_lookup3)."""
    mask = _MASK
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & mask
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & mask
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & mask
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & mask
        a = (a - c) & mask; a ^= _rot(c, 4); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= _rot(a, 6); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= _rot(b, 8); b = (b + a) & mask  # noqa: E702
        a = (a - c) & mask; a ^= _rot(c, 16); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= _rot(a, 19); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= _rot(b, 4); b = (b + a) & mask  # noqa: E702
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & mask
    b = (b + int.from_bytes(tail[4:8], "little")) & mask
    c = (c + int.from_bytes(tail[8:12], "little")) & mask
    c ^= b; c = (c - _rot(b, 14)) & mask  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & mask  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & mask  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & mask  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & mask  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & mask  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & mask  # noqa: E702
    return c


def superblock(path: Path) -> dict | None:
    """Location, version, consistency flags and stored end-of-file of an HDF5 superblock.

    Keys: offset (bytes), version, flags, eof (bytes, relative to offset), and for versions
    2 and 3 header (the superblock's bytes, checksum last). None when no HDF5 signature is
    found (at 0, 512, 1024, ... as the format allows).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(96)
            if head[:8] == SIGNATURE:
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


def has_stale_write_flag(info: dict) -> bool:
    """Whether the superblock carries a write flag HDF5 enforces (version 3 only)."""
    return bool(info["flags"]) and info["version"] == 3


def cleared_header(info: dict) -> bytes:
    """The superblock `info` with its consistency flags cleared and its checksum redone; to be
    written at info["offset"]."""
    header = bytearray(info["header"])
    header[11] = 0
    header[-4:] = lookup3(bytes(header[:-4])).to_bytes(4, "little")
    return bytes(header)
