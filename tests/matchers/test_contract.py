"""The matcher contract: every registered matcher declares its capabilities and neutral
options; changing only a neutral option (LightGlue's batch_size) never makes an output file
look foreign; a new extractor and a new matcher, added the way docs/architecture.md says
(a model file + one registry line each), run through the pipeline on real images."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import cv2
import h5py
import numpy as np
import pytest
import torch

from matchlab.errors import OutputMismatchError
from matchlab.matchers.base import Matcher, MatcherCapabilities
from matchlab.pipeline import extract_features, match_pairs, model_record
from matchlab.registry import EXTRACTORS, MATCHERS, load_extractor, load_matcher, resolve
from matchlab.store import FeatureStore, MatchStore
from matchlab.types import GEOMETRY_MODELS

GRAF = "oxford_graf"


@pytest.mark.parametrize("name", sorted(MATCHERS))
def test_every_matcher_declares_the_contract(name):
    cls = resolve("matcher", name)
    assert issubclass(cls, Matcher)
    caps = cls.__dict__["capabilities"]  # declared by the class itself, not inherited
    assert isinstance(caps, MatcherCapabilities)
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.uses_gravity = not caps.uses_gravity
    assert set(caps.estimates) <= set(GEOMETRY_MODELS)
    assert "result_neutral_options" in cls.__dict__
    assert set(cls.result_neutral_options) <= set(cls.full_default_conf())
    assert caps.verifies_geometry <= bool(caps.estimates)  # verified matches need a model


@pytest.mark.parametrize("name,conf,features", [
    ("superglue", {"weights": "outdoor"}, "superpoint"),
    ("lightglue", {"for_features": "disk"}, "disk")])
def test_a_model_built_under_inference_mode_matches_alike(name, conf, features, datasets_root):
    """Built inside `torch.inference_mode` its parameters are inference tensors (no version
    counter); its derived weights must still work, and give the same matches."""
    extractor = load_extractor(features, max_keypoints=512, resize=480)
    f0, f1 = (extractor(datasets_root / GRAF / f"img{i}.png") for i in (1, 2))
    with torch.inference_mode():
        inside = load_matcher(name, **conf)
        got = inside(f0, f1)
    want = load_matcher(name, **conf)(f0, f1)
    assert (got.matches0 > -1).sum() > 50
    assert torch.equal(got.matches0, want.matches0)


def test_affineglue_narrows_its_capabilities_to_its_options():
    ag = load_matcher("affineglue", affines="neighbours", model="essential")
    assert ag.capabilities.estimates == ("essential",) and not ag.capabilities.needs_frames
    assert load_matcher("affineglue").capabilities.needs_frames
    assert type(ag).capabilities.estimates == ("homography", "essential")


def test_nn_candidates_hold_the_mutual_matches(datasets_root):
    sift = load_extractor("sift", max_keypoints=256, resize=320)
    f0, f1 = (sift(datasets_root / GRAF / f"img{i}.png") for i in (1, 2))
    nn = load_matcher("nn")
    idx, scores = nn.candidates(f0, f1, 3)
    m = nn(f0, f1)
    assert idx.shape == scores.shape == (len(f0), 3) and (scores[:, :-1] >= scores[:, 1:]).all()
    valid = m.matches0 > -1
    assert valid.sum() > 20 and torch.equal(idx[valid, 0], m.matches0[valid])
    (pm, pidx, pscores), = nn.match_candidates([(f0, f1)], 3)  # the default: both, pair by pair
    assert torch.equal(pm.matches0, m.matches0) and torch.equal(pidx, idx)
    with pytest.raises(ValueError, match="k must be"):
        nn.candidates(f0, f1, 0)


@pytest.fixture(scope="module")
def graf_disk(datasets_root, tmp_path_factory):
    """DISK (256 keypoints, long side 320) on graf 1, 2, 3 in a features.h5."""
    folder = tmp_path_factory.mktemp("graf_disk")
    extractor = load_extractor("disk", max_keypoints=256, resize=320)
    names = ["img1.png", "img2.png", "img3.png"]
    report = extract_features(datasets_root / GRAF, names, folder / "features.h5", extractor,
                              progress=False)
    assert report.done == 3
    return folder / "features.h5"


def _match(features, out, pairs, **conf):
    matcher = load_matcher("lightglue", features="disk", **conf)
    return match_pairs(pairs, features, out, matcher, progress=False,
                       record=model_record("lightglue", matcher))


@pytest.mark.slow  # the DISK features of the module fixture
def test_rerun_with_only_lightglue_batch_size_changed_is_accepted(graf_pairs):
    features, out = graf_pairs
    first, second = [("img1.png", "img2.png")], [("img1.png", "img2.png"), ("img1.png", "img3.png")]
    assert _match(features, out, first, batch_size=8).done == 1
    report = _match(features, out, second, batch_size=1)  # refused before the fix
    assert (report.already, report.done) == (1, 1) and report.matches > 20
    with MatchStore(out, "r") as store:
        stored = store.read_pairs("img1.png", "img3.png")[0]
    assert len(stored) == report.matches
    with pytest.raises(OutputMismatchError, match="filter_threshold"):
        _match(features, out, second, filter_threshold=0.5)  # a result-changing option


def test_files_recording_a_now_neutral_option_are_accepted(graf_pairs):
    """A matches.h5 whose record still lists batch_size (written before it was declared
    neutral) is accepted with any batch_size; other options still have to agree."""
    features, out = graf_pairs
    record = model_record("lightglue", load_matcher("lightglue", features="disk"))
    record["conf"]["batch_size"] = 8
    with MatchStore(out) as store:
        store.file.attrs["matchlab_matcher"] = json.dumps(record, sort_keys=True)
    assert _match(features, out, [("img2.png", "img3.png")], batch_size=4).done == 1
    with pytest.raises(OutputMismatchError, match="depth_confidence"):
        _match(features, out, [("img2.png", "img1.png")], depth_confidence=-1)


@pytest.fixture
def graf_pairs(graf_disk, tmp_path):
    return graf_disk, tmp_path / "matches.h5"


# ------------------------------------------------------------------ a new model, as documented
TOY_MODULE = '''
"""A toy extractor (gradient corners, raw-patch descriptors) and a toy matcher (mutual
nearest neighbours by patch correlation): what docs/architecture.md asks of a new model."""
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from matchlab.extractors.base import Extractor, top_k
from matchlab.matchers.base import Matcher, MatcherCapabilities
from matchlab.types import Matches


class PatchCorners(Extractor):
    default_conf: ClassVar[dict[str, Any]] = {"patch": 9}

    def detect(self, images):
        r = self.conf["patch"] // 2
        gy, gx = torch.gradient(images[:, 0], dim=(1, 2))
        response = F.avg_pool2d((gx * gy).abs()[:, None], 5, 1, 2)[:, 0]
        peak = response == F.max_pool2d(response[:, None], 9, 1, 4)[:, 0]
        response = torch.where(peak, response, 0)
        response[:, :r + 1], response[:, -r - 1:], response[:, :, :r + 1], response[:, :, -r - 1:] = 0, 0, 0, 0
        patches = F.unfold(images, self.conf["patch"], padding=r)  # [B, p*p, h*w]
        outs = []
        for b in range(images.shape[0]):
            flat = response[b].flatten()
            keep = top_k(flat, self.conf["max_keypoints"])
            keep = keep[flat[keep] > 0]
            w = images.shape[-1]
            kp = torch.stack([keep % w, keep // w], -1).float()
            desc = patches[b][:, keep].T
            desc = F.normalize(desc - desc.mean(1, keepdim=True), dim=1)
            outs.append({"keypoints": kp, "descriptors": desc, "scores": flat[keep]})
        return outs


class PatchCorrelation(Matcher):
    default_conf: ClassVar[dict[str, Any]] = {"min_correlation": 0.9, "rows_per_step": 512}
    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities()
    result_neutral_options: ClassVar[tuple[str, ...]] = ("rows_per_step",)

    def forward(self, feats0, feats1):
        sim = feats0.descriptors @ feats1.descriptors.T
        best0, best1 = sim.argmax(1), sim.argmax(0)
        n0 = len(feats0)
        mutual = best1[best0] == torch.arange(n0)
        score = sim[torch.arange(n0), best0]
        ok = mutual & (score >= self.conf["min_correlation"])
        return Matches(torch.where(ok, best0, -1), torch.where(ok, score, 0).clamp(0, 1))

    def candidates(self, feats0, feats1, k):
        best = (feats0.descriptors @ feats1.descriptors.T).topk(min(k, len(feats1)), dim=1)
        return best.indices, best.values.clamp(0, 1)
'''


def test_a_new_extractor_and_matcher_run_through_the_pipeline(datasets_root, tmp_path,
                                                              monkeypatch):
    """The documented path: one model file (here written by the test) and one registry line
    per model; nothing else changes. On two overlapping crops of a real image (image 1 is
    image 0 shifted by (40, 30) px) the toy models' matches follow the shift."""
    package = tmp_path / "toy_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "patches.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRACTORS, "patch-corners", "toy_models.patches:PatchCorners")
    monkeypatch.setitem(MATCHERS, "patch-correlation", "toy_models.patches:PatchCorrelation")

    image = cv2.imread(str(datasets_root / GRAF / "img1.png"))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), image[0:400, 0:500])
    cv2.imwrite(str(images / "b.png"), image[30:430, 40:540])

    extractor = load_extractor("patch-corners", resize=None, max_keypoints=300)
    report = extract_features(images, ["a.png", "b.png"], tmp_path / "features.h5", extractor,
                              progress=False, record=model_record("patch-corners", extractor))
    assert report.done == 2 and not report.failed
    matcher = load_matcher("patch-correlation")
    assert model_record("patch-correlation", matcher)["conf"] == {"min_correlation": 0.9}
    report = match_pairs([("a.png", "b.png")], tmp_path / "features.h5", tmp_path / "matches.h5",
                         matcher, progress=False, record=model_record("patch-correlation", matcher))
    assert report.done == 1 and report.matches > 50
    with FeatureStore(tmp_path / "features.h5", "r") as store:
        k0, k1 = store.read_keypoints("a.png"), store.read_keypoints("b.png")
    with MatchStore(tmp_path / "matches.h5", "r") as store:
        idx, scores = store.read_pairs("a.png", "b.png")
    shift = np.asarray(k0)[idx[:, 0]] - np.asarray(k1)[idx[:, 1]]
    assert np.mean(np.abs(shift - (40, 30)).max(1) < 0.5) > 0.95
    assert (scores >= 0.9).all()
    # AffineGlue takes any matcher's candidates as its pools: no branch on the base
    with FeatureStore(tmp_path / "features.h5", "r") as store:
        f0, f1 = store.read("a.png"), store.read("b.png")
    ag = load_matcher("affineglue", base="patch-correlation", affines="neighbours")
    m = ag(f0, f1)
    assert len(m) > 50 and m.geometry.model == "homography"
    H = (m.geometry.matrix / m.geometry.matrix[2, 2]).numpy()
    assert np.abs(H - [[1, 0, -40], [0, 1, -30], [0, 0, 1]]).max() < 0.5
