"""The driver's side of a stage run by an executor: the tasks of what is left to do, and
each result written as it arrives through the stage's store (the local loops' writes)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..memory import IMAGES_BETWEEN_TRIMS, PAIRS_BETWEEN_TRIMS, FreedMemoryReleaser
from ..types import Matches
from .executors import Executor, WorkerSpec
from .payload import features_from_arrays, features_to_arrays

# pairs per matching task: a multiple of any batch size up to 64 (the same batches as a
# local run), enough work to hide a task's overhead (milliseconds), few enough to spread
PAIRS_PER_TASK = 64


def image_source(executor: Executor, image_dir: Path, name: str) -> str | bytes:
    """What a worker reads image `name` from: its bytes with --ship-images, else its path
    (the same path on every machine: a shared file system)."""
    path = Path(image_dir) / name
    if not executor.ship_images:
        return str(path.resolve())
    try:
        return path.read_bytes()
    except OSError:  # missing or unreadable: the worker's read reports it as a local run does
        return str(path)


def extract_remote(executor: Executor, spec: WorkerSpec, image_dir: Path, todo: Sequence[str],
                   store, report, as_half: bool, log: Callable[[str], None] | None,
                   progress: bool) -> None:
    """`pipeline.extract_features` for the images `todo` on the executor's workers."""
    results = executor.map(spec, "extract", todo,
                           lambda name: (name, image_source(executor, image_dir, name)))
    release = FreedMemoryReleaser(every=IMAGES_BETWEEN_TRIMS)
    for name, (status, value) in tqdm(results, total=len(todo), desc="extract", unit="img",
                                      disable=not progress):
        release.step()
        if status == "failed":
            report.failed[name] = value
            if log is not None:
                log(f"skipped {name}: {value}")
            continue
        store.write(name, features_from_arrays(value), as_half=as_half)
        report.done += 1


def match_remote(executor: Executor, spec: WorkerSpec, todo: Sequence[tuple[str, str]],
                 features_path: Path, cache, store, report, digests: dict, as_half: bool,
                 batch_size: int, gravity: dict | None, progress: bool) -> None:
    """`pipeline.match_pairs` for the pairs `todo` (in visit order) on the executor's
    workers: chunks of `PAIRS_PER_TASK` consecutive pairs. `cache` reads the features the
    driver ships with --ship-images."""
    step = max(int(batch_size), 1)
    size = max(PAIRS_PER_TASK // step, 1) * step
    chunks = range(0, len(todo), size)
    source = str(Path(features_path).resolve())

    def arguments(start: int) -> tuple:
        chunk = todo[start:start + size]
        features = source
        if executor.ship_images:
            features = {n: features_to_arrays(cache[n]) for pair in chunk for n in pair}
        prior = ({n: gravity[n] for pair in chunk for n in pair if n in gravity}
                 if gravity else None)
        return chunk, features, prior, step

    release = FreedMemoryReleaser(every=PAIRS_BETWEEN_TRIMS)
    with tqdm(total=len(todo), desc="match", unit="pair", disable=not progress) as bar:
        for start, results in executor.map(spec, "match", chunks, arguments):
            chunk = todo[start:start + size]
            release.step(len(chunk))
            for (name0, name1), (matches0, scores0) in zip(chunk, results):
                result = Matches(torch.from_numpy(np.array(matches0)),
                                 torch.from_numpy(np.array(scores0)))
                store.write(name0, name1, result, as_half=as_half,
                            keypoints=(digests[name0], digests[name1]))
                report.matches += len(result)
            report.done += len(chunk)
            bar.update(len(chunk))


def describe_remote(executor: Executor, encoder, image_dir: Path, todo: Sequence[str],
                    store, bar) -> int:
    """`retrieval.select.compute_global_descriptors` of MixVPR (`encoder`) for the images
    `todo` on the executor's workers, a batch of the encoder's size per task; images written."""
    from .executors import worker_spec

    step = max(int(encoder.conf["batch_size"]), 1)
    done = 0

    def arguments(start: int) -> tuple:
        names = todo[start:start + step]
        return names, [image_source(executor, image_dir, n) for n in names]

    for start, rows in executor.map(worker_spec("mixvpr", encoder), "describe",
                                    range(0, len(todo), step), arguments):
        names = todo[start:start + step]
        for name, row in zip(names, rows):
            store.write(name, row)
        done += len(names)
        bar.update(len(names))
    return done
