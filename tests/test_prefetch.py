"""Prefetching: loads run ahead in order, errors surface at their item's turn, extraction
with prefetching stores exactly what the extractor gives image by image."""
from __future__ import annotations

import shutil
import threading

import pytest
import torch

from matchlab import load_extractor
from matchlab.pipeline import extract_features
from matchlab.prefetch import prefetched
from matchlab.store import FeatureStore


def test_loads_run_ahead_bounded_and_in_order():
    started = {i: threading.Event() for i in range(6)}
    threads = set()

    def load(i):
        threads.add(threading.current_thread().name)
        started[i].set()
        return i * 10

    seen = []
    for i, future in prefetched(range(6), load, ahead=2):
        if i == 0:  # while the consumer holds item 0, items 1 and 2 load, item 3 does not
            assert started[1].wait(5) and started[2].wait(5)
            assert not started[3].wait(0.2)
        seen.append(future.result())
    assert seen == [0, 10, 20, 30, 40, 50]
    assert threads and threading.current_thread().name not in threads


def test_a_failed_load_raises_at_its_turn_and_the_rest_go_on():
    def load(i):
        if i == 1:
            raise ValueError("bad item 1")
        return i

    results = []
    for i, future in prefetched(range(4), load):
        try:
            results.append(future.result())
        except ValueError as e:
            results.append(str(e))
    assert results == [0, "bad item 1", 2, 3]


def test_leaving_early_stops_loading():
    loaded = []
    loads = prefetched(range(100), loaded.append, ahead=2)
    for i, _ in loads:
        if i == 3:
            break
    loads.close()
    assert len(loaded) <= 3 + 1 + 2  # the items taken, one running, `ahead` queued
    with pytest.raises(ValueError, match="ahead"):
        next(prefetched(range(3), int, ahead=0))


def test_extraction_stores_what_the_extractor_gives_each_image(datasets_root, tmp_path):
    """Three graf images around a truncated JPEG: same bytes as extracting image by image,
    the bad one reported and skipped; a second run redoes nothing."""
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2, 3):
        shutil.copy(datasets_root / "oxford_graf" / f"img{i}.png", images / f"img{i}.png")
    jpeg = (datasets_root / "lightglue_assets" / "sacre_coeur1.jpg").read_bytes()
    (images / "img2b.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    names = ["img1.png", "img2.png", "img2b.jpg", "img3.png"]
    extractor = load_extractor("superpoint", resize=320, max_keypoints=256)
    report = extract_features(images, names, tmp_path / "f.h5", extractor, progress=False)
    assert report.done == 3 and list(report.failed) == ["img2b.jpg"]
    assert "truncated" in report.failed["img2b.jpg"]
    with FeatureStore(tmp_path / "f.h5", "r") as store:
        for name in ("img1.png", "img2.png", "img3.png"):
            alone = extractor(images / name)
            stored = store.read(name)
            for key in ("keypoints", "descriptors", "scores"):
                assert torch.equal(getattr(stored, key), getattr(alone, key)), (name, key)
    again = extract_features(images, names, tmp_path / "f.h5", extractor, progress=False)
    assert again.done == 0 and again.already == 3 and list(again.failed) == ["img2b.jpg"]
