"""Giving freed heap memory back to the operating system during long loops."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None under another C library."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


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
