"""How the process's heap is used: freed memory kept for reuse while a network runs
(`reuse_freed_memory`), and given back to the operating system during long loops
(`FreedMemoryReleaser`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library if it is glibc (has malloc_trim and mallopt), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (AttributeError elsewhere)
        return libc
    except (OSError, AttributeError):
        return None


def _malloc_trim():
    """glibc's malloc_trim, or None under another C library."""
    libc = _glibc()
    return None if libc is None else libc.malloc_trim


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NEVER = -1  # M_TRIM_THRESHOLD -1: glibc never trims by itself (mallopt(3))


def reuse_freed_memory() -> bool:
    """Keep freed heap memory for reuse instead of returning each large block to the
    operating system at once (glibc: no mmap for large blocks, no automatic trimming).
    Process-wide and lasting; returns False where the C library is not glibc (nothing done).

    Why: a network's activations are blocks of tens to hundreds of MB. glibc serves each
    with a fresh mmap and unmaps it when freed, so every forward pass faults all of its
    activation memory in again, page by page, and the kernel zeroes each page: DISK at
    1024 px faulted ~400,000 pages (1.6 GB) a call. Measured on 2 cores, 1024 px, 2048
    keypoints, the four models in one fresh process per setting (defaults, then this; the
    setting cannot be undone in a process, so not interleaved), median of 3 calls, load
    1.3-1.9; DISK alone alternated twice more, same ratios:
    DISK bfloat16 2,125 -> 1,442 ms, float32 4,068 -> 2,764; SuperPoint float32 881 -> 647,
    bfloat16 399 -> 326; LightGlue float32 1,911 -> 1,678; SuperGlue unchanged (its
    buffers are smaller). Automatic trimming must be off, not only rarer: with the largest
    threshold mallopt takes (2 GB), three DISK models called in turn still faulted 250,000-
    530,000 pages a call (the heap's free top passed 2 GB and was given back); with -1
    ("never"), none. The `matchlab` command and its Ray workers call this at start;
    Python users call it once themselves (it changes the whole process's allocator).

    The cost is resident memory: the heap keeps its high-water mark until trimmed;
    `FreedMemoryReleaser` (in every long loop of the pipeline) trims it periodically.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER))


class FreedMemoryReleaser:
    """Call `step(n)` for every n items a long loop finishes; every `every` items it asks the C
    library to give freed heap pages back to the operating system (glibc's malloc_trim(0); a
    no-op elsewhere).

    Why: each pair's large temporaries (distance tiles, feature arrays, network activations)
    are freed, but glibc keeps their space in its heap, fragmented between small live objects,
    and serves the next large request from new pages, so the resident memory of a matching
    loop grew with the number of pairs: by ~17 kB a pair on a 4,000-image synthetic street
    (`benchmarks/scale.py`), and a 10,000-image run had 2.4 of its 2.7 GB of heap free, in
    53,000 pieces. Trimming every 512 pairs kept 12,000 pairs of that street at 342 MB
    instead of 940 MB in about the same time (122 s against 116 s: one run each, one after
    the other, load about 2, the runs' own two threads).
    """

    def __init__(self, every: int) -> None:
        self.every, self.count = max(int(every), 1), 0

    def step(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self.every:
            self.count = 0
            trim = _malloc_trim()
            if trim is not None:
                trim(0)


PAIRS_BETWEEN_TRIMS = 512  # ~5 s of mutual-NN matching at 1,000 keypoints
IMAGES_BETWEEN_TRIMS = 32
