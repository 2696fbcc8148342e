"""Retrieval of queries against a model's images (matchlab.retrieval.query) with the model's
own VLAD descriptors, on synthetic local features: each image has its own descriptors (one
per scene point, drawn around the image's centre), and a query sees two thirds of one
image's points again, with a little noise."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matchlab.errors import ConfigError
from matchlab.retrieval.query import QueryRetriever
from matchlab.retrieval.select import compute_global_descriptors
from matchlab.store import FeatureStore
from matchlab.types import Features

NAMES = [f"img{i:02d}.jpg" for i in range(12)]


def _features(points: np.ndarray, rng, seen: float = 1.0, noise: float = 0.0) -> Features:
    """Features of a view of `points` [P, D]: a `seen` fraction of them, with `noise`."""
    chosen = points[np.sort(rng.choice(len(points), int(seen * len(points)), replace=False))]
    desc = chosen + noise * rng.normal(size=chosen.shape)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    n = len(desc)
    return Features(torch.rand(n, 2) * 100, torch.from_numpy(desc).float(), torch.rand(n),
                    (100, 100))


def _query(points: np.ndarray, rng) -> Features:
    return _features(points, rng, seen=2 / 3, noise=0.05)


@pytest.fixture()
def model(tmp_path):
    rng = np.random.default_rng(0)
    points = {n: rng.normal(size=32) + 0.5 * rng.normal(size=(300, 32)) for n in NAMES}
    sfm = tmp_path / "model"
    sfm.mkdir()
    with FeatureStore(sfm / "features.h5") as store:
        for name in NAMES:
            store.write(name, _features(points[name], rng))
    return sfm, points, rng


def test_queries_use_the_models_vlad_and_find_their_image(model, tmp_path):
    sfm, points, rng = model
    compute_global_descriptors(NAMES, image_dir=sfm, output=sfm / "global.h5", method="vlad",
                               features=sfm / "features.h5", progress=False)
    retriever = QueryRetriever(NAMES, 3, sfm_dir=sfm, work_dir=tmp_path / "out")
    assert retriever.method == "vlad" and "top 3 of 12" in retriever.description
    assert not (tmp_path / "out").exists()  # nothing computed: the model's own descriptors
    for name in ("img03.jpg", "img10.jpg"):
        found = retriever(tmp_path / "unused.jpg", _query(points[name], rng))
        assert len(found) == 3 and found[0] == name
    with pytest.raises(ConfigError, match="vlad"):
        QueryRetriever(NAMES, 3, sfm_dir=sfm, work_dir=tmp_path / "out", method="mixvpr")


def test_without_global_descriptors_the_models_are_computed_or_all_images_used(model, tmp_path):
    sfm, points, rng = model
    everything = QueryRetriever(NAMES, 12, sfm_dir=sfm, work_dir=tmp_path / "out")
    assert everything.method == "all" and everything(None, None) == NAMES
    logged = []
    retriever = QueryRetriever(NAMES, 2, sfm_dir=sfm, work_dir=tmp_path / "out",
                               log=logged.append)
    assert (tmp_path / "out" / "model-global.h5").is_file() and "no global" in logged[0]
    assert retriever(None, _query(points["img07.jpg"], rng))[0] == "img07.jpg"
    with pytest.raises(ConfigError, match="has no global.h5"):
        QueryRetriever(NAMES, 2, sfm_dir=sfm, work_dir=tmp_path / "out", method="mixvpr")
