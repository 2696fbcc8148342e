"""Work on the next items while the current one is used: `prefetched(items, load)`.

Extraction decodes and resizes the next images in a background thread while the network
runs on the current one (OpenCV's decoder and torch release the GIL). Results come back in
order, each as a `Future`: `.result()` returns the loaded value or raises the exception the
load raised, at that item's turn, so a bad item is handled where it would have been
without prefetching.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], load: Callable[[T], R],
               ahead: int = 2) -> Iterator[tuple[T, Future[R]]]:
    """(item, future of load(item)) in the order of `items`, with load running in one
    background thread at most `ahead` items in front of the consumer (memory: `ahead` + 1
    loaded values at a time). Leaving the loop early cancels the loads not started yet."""
    if ahead < 1:
        raise ValueError(f"ahead must be >= 1, got {ahead}")
    queue: deque[tuple[T, Future[R]]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="matchlab-prefetch") as pool:
        try:
            for item in source:
                queue.append((item, pool.submit(load, item)))
                if len(queue) > ahead:
                    yield queue.popleft()
            while queue:
                yield queue.popleft()
        finally:
            for _, future in queue:
                future.cancel()
