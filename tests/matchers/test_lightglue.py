"""LightGlue: official weight loading, kornia's LightGlue as an independent oracle on real
pairs (adaptivity on and off), the readable network == the packed engine, batch == single,
edge cases, rotations, top-k candidates and a precision check against mutual NN on Graffiti."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matchlab import Features, load_extractor, load_matcher
from matchlab.errors import ConfigError
from matchlab.geometry.primitives.homography import reprojection_errors
from matchlab.geometry.laf import scale_ori_from_lafs
from matchlab.matchers.attention import rotate_half_rows
from matchlab.matchers.lightglue import LightGlue
from matchlab.matchers.lightglue_blocks import confidence_threshold, official_state_dict, rotate_half
from matchlab.matchers.rotation import rotate_features
from matchlab.registry import ConfigError
from matchlab.types import ShapeError
from matchlab.weights import load_checkpoint

kornia_feature = pytest.importorskip("kornia.feature")  # a dependency of matchlab: always there


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """kornia must never fetch weights here: it only gets our state dicts."""
    import kornia.core.download as download

    def refuse(*args, **kwargs):
        raise AssertionError("kornia tried to download weights")
    monkeypatch.setattr(download, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(kornia_feature.lightglue, "load_state_dict_from_url", refuse)


# ------------------------------------------------------------------ fixtures (real features)
@pytest.fixture(scope="module")
def disk_feats(datasets_root):
    """DISK (long side 640, 1024 kpts) of graf 1/2/3, sacre_coeur 1/2 and an EVD pair."""
    ext = load_extractor("disk", resize=640, max_keypoints=1024)
    paths = {"graf1": "oxford_graf/img1.png", "graf2": "oxford_graf/img2.png",
             "graf3": "oxford_graf/img3.png", "sc1": "lightglue_assets/sacre_coeur1.jpg",
             "sc2": "lightglue_assets/sacre_coeur2.jpg", "evd1": "evd/1/adam.png", "evd2": "evd/2/adam.png"}
    return {k: ext(datasets_root / p) for k, p in paths.items()}


def kornia_lightglue(state: dict, input_dim: int, add_scale_ori: bool = False, **conf):
    """kornia's own LightGlue with our state dict (no download: features=None)."""
    model = kornia_feature.LightGlue(features=None, input_dim=input_dim, add_scale_ori=add_scale_ori, **conf)
    missing, unexpected = model.load_state_dict(official_state_dict(state), strict=False)
    assert unexpected == [] and set(missing) <= {"confidence_thresholds"}
    return model.eval()


def kornia_match(model, f0: Features, f1: Features, sift: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    def side(f):
        d = {"keypoints": f.keypoints[None], "descriptors": f.descriptors[None],
             "image_size": torch.tensor([f.image_size])}
        if sift:
            scales, oris = scale_ori_from_lafs(f.lafs)
            d.update(scales=scales[None], oris=oris[None])
        return d
    with torch.inference_mode():
        out = model({"image0": side(f0), "image1": side(f1)})
    m0 = out["matches0"][0]
    return m0, torch.where(m0 > -1, out["matching_scores0"][0], 0.0)


def best(f: Features, n: int) -> Features:
    return f.subset(torch.argsort(f.scores, descending=True)[:n])


def check_matches(m, n0: int, n1: int) -> None:
    assert m.matches0.shape == (n0,) and m.matches0.dtype == torch.long
    assert m.scores0.shape == (n0,) and m.scores0.dtype == torch.float32
    assert ((m.scores0 >= 0) & (m.scores0 <= 1)).all()
    assert (m.scores0[m.matches0 < 0] == 0).all()
    valid = m.matches0 > -1
    assert (m.matches0[valid] < n1).all()
    m1 = m.extras["matches1"]
    assert m1.shape == (n1,)
    assert torch.equal(m1[m.matches0[valid]], torch.nonzero(valid)[:, 0])  # one-to-one, mutual
    assert int((m1 > -1).sum()) == int(valid.sum())


# ------------------------------------------------------------------ weights and config
@pytest.mark.parametrize("features", ["disk", "aliked"])
def test_official_weights_load_strictly(features):
    ckpt = load_checkpoint(f"{features}_lightglue.pth")
    model = LightGlue(features=features)
    ours = model.state_dict()
    mapped = official_state_dict(ckpt)
    assert set(ours) == set(mapped)                        # strict: nothing missing or extra
    old = "self_attn.3.Wqkv.weight" if features == "disk" else "transformers.3.self_attn.Wqkv.weight"
    assert torch.equal(ours["transformers.3.self_attn.Wqkv.weight"], ckpt[old])
    assert torch.equal(ours["token_confidence.7.token.0.weight"], ckpt["token_confidence.7.token.0.weight"])
    if features == "disk":  # the old layout's unused scalars are dropped, and only those
        assert len(ckpt) - len(mapped) == 9 and all(k.endswith(".r") for k in set(ckpt) - set(mapped) if
                                                    not k.startswith(("self_attn", "cross_attn")))
    bad = dict(ckpt)
    bad["log_assignment.0.r" if features == "disk" else "transformers.0.extra"] = torch.tensor([2.0])
    with pytest.raises((ValueError, RuntimeError)):
        LightGlue(features=features, weights=None).load_state_dict(official_state_dict(bad), strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("features", ["superpoint", "sift"])
def test_user_supplied_weights_in_official_layout(features, tmp_path):
    """superpoint/sift_lightglue.pth are not obtainable offline: a randomly initialised model
    saved in the official key layout loads strictly through weights=<path>."""
    torch.manual_seed(3)
    random = LightGlue(features=features, weights=None)
    path = tmp_path / f"{features}_lightglue.pth"
    torch.save(random.state_dict(), path)
    loaded = LightGlue(features=features, weights=str(path))
    for k, v in random.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    expected = {"superpoint": (256, 2), "sift": (128, 4)}[features]
    assert loaded.input_dim == expected[0] and loaded.posenc.Wr.weight.shape == (32, expected[1])
    with pytest.raises(RuntimeError):  # the other layout does not load
        other = "sift" if features == "superpoint" else "superpoint"
        LightGlue(features=other, weights=str(path))


def test_config_errors_and_registry():
    with pytest.raises(ConfigError):
        LightGlue(features="orb", weights=None)
    with pytest.raises(ConfigError):
        LightGlue(features="disk", weights=None, rotations=[45])
    with pytest.raises(ConfigError):
        LightGlue(features="disk", weights=None, bogus=1)
    m = load_matcher("lightglue", features="disk")
    assert isinstance(m, LightGlue) and not m.training and hasattr(m, "match_batch")
    f = Features(torch.rand(5, 2) * 100, torch.randn(5, 256), torch.rand(5), (100, 100))
    with pytest.raises(ShapeError):
        m(f, f)  # SuperPoint-sized descriptors for the DISK model
    sift = LightGlue(features="sift", weights=None)
    g = Features(torch.rand(5, 2) * 100, torch.randn(5, 128), torch.rand(5), (100, 100))
    with pytest.raises(ShapeError):
        sift(g, g)  # SIFT needs LAFs (scale, orientation)


def test_helpers():
    # 0.8 + 0.1 exp(-4 l / 9) (the paper's table rounds l = 7, 0.80446, up to 0.805)
    assert [round(confidence_threshold(i), 3) for i in range(9)] == \
        [0.9, 0.864, 0.841, 0.826, 0.817, 0.811, 0.807, 0.804, 0.803]
    x = torch.randn(2, 3, 5)  # rotate_half on head-major channels (2 heads of 4)
    w = torch.randn(8, 5)
    ref = x @ w.t()
    ref = torch.stack([-ref[..., 1::2], ref[..., 0::2]], -1).flatten(-2)
    assert torch.allclose(rotate_half(x @ w.t()), ref)  # the readable blocks' rotate_half
    assert torch.allclose(x @ rotate_half_rows(w, 2).t(), ref)  # folded into the packed weights


# ------------------------------------------------------------------ kornia oracle
@pytest.mark.slow
@pytest.mark.parametrize("adaptive", [True, False])
def test_matches_equal_kornia_lightglue_disk(disk_feats, adaptive):
    conf = {} if adaptive else {"depth_confidence": -1, "width_confidence": -1}
    ours = LightGlue(features="disk", **conf)
    ref = kornia_lightglue(load_checkpoint("disk_lightglue.pth"), 128, **conf)
    n = 1024 if adaptive else 512  # kornia's full-depth CPU path is slow: 512 best points
    for a, b in [("graf1", "graf2"), ("sc1", "sc2"), ("evd1", "evd2")]:
        f0, f1 = (best(disk_feats[k], n) for k in (a, b))
        m = ours(f0, f1)
        check_matches(m, len(f0), len(f1))
        k0, ks = kornia_match(ref, f0, f1)
        agree = (m.matches0 == k0).float().mean().item()
        assert agree >= 0.995, f"{a}-{b}: {agree:.4f} of matches0 equal kornia's"
        both = (m.matches0 > -1) & (k0 > -1)
        assert torch.allclose(m.scores0[both], ks[both], atol=1e-3)
        assert len(m) > (100 if a != "evd1" else 0)
        assert (m.extras["stop"] < 9) == adaptive or a == "evd1"


@pytest.mark.slow
def test_matches_equal_kornia_lightglue_aliked(datasets_root):
    ext = load_extractor("aliked", resize=640, max_keypoints=1024)
    f0 = ext(datasets_root / "lightglue_assets/sacre_coeur1.jpg")
    f1 = ext(datasets_root / "lightglue_assets/sacre_coeur2.jpg")
    m = LightGlue(features="aliked")(f0, f1)
    k0, _ = kornia_match(kornia_lightglue(load_checkpoint("aliked_lightglue.pth"), 128), f0, f1)
    assert (m.matches0 == k0).float().mean() >= 0.995 and len(m) > 100


@pytest.mark.slow
@pytest.mark.parametrize("features", ["superpoint", "sift"])
def test_random_weights_equal_kornia(datasets_root, features):
    """The superpoint (input_dim 256, no projection) and sift (4-D rotary with scale and
    orientation) configurations, with random weights, against kornia on real features."""
    ext = load_extractor(features, resize=640, max_keypoints=384)
    f0, f1 = (ext(datasets_root / f"oxford_graf/img{i}.png") for i in (1, 2))
    torch.manual_seed(0)
    ours = LightGlue(features=features, weights=None, filter_threshold=0.0)
    ref = kornia_lightglue(ours.state_dict(), ours.input_dim, add_scale_ori=features == "sift",
                           filter_threshold=0.0)
    m = ours(f0, f1)
    k0, _ = kornia_match(ref, f0, f1, sift=features == "sift")
    assert (m.matches0 == k0).float().mean() >= 0.995
    assert len(m) > 0


# ------------------------------------------------------------------ readable == packed
def assert_same_result(packed, readable) -> None:
    """Identical matches, exit layer and candidates; scores equal up to float rounding."""
    assert torch.equal(packed.matches0, readable.matches0)
    assert torch.equal(packed.extras["matches1"], readable.extras["matches1"])
    assert packed.extras["stop"] == readable.extras["stop"]
    assert torch.allclose(packed.scores0, readable.scores0, atol=1e-4)
    if "candidates" in packed.extras:
        assert torch.equal(packed.extras["candidates"], readable.extras["candidates"])
        assert torch.allclose(packed.extras["candidate_scores"], readable.extras["candidate_scores"],
                              atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("adaptive", ["depth+width", "width", "none"])
def test_readable_network_equals_packed_engine_disk(disk_feats, adaptive):
    """The official DISK weights on real pairs: the readable network (one block forward at
    a time, as in the paper) and the packed engine (several pairs per pass, fused weights)
    give the same matches; with early exit, the pairs exit at different layers."""
    conf = {"depth+width": {}, "width": {"depth_confidence": -1},
            "none": {"depth_confidence": -1, "width_confidence": -1}}[adaptive]
    model = LightGlue(features="disk", top_k=3, **conf)
    f = disk_feats
    pairs = [(f["graf1"], f["graf2"]), (f["sc1"], f["sc2"]), (f["evd1"], f["evd2"])]
    packed = model.match_batch(pairs)
    stops = set()
    for (f0, f1), mp in zip(pairs, packed):
        mr = model.forward_readable(f0, f1, top_k=3)
        check_matches(mr, len(f0), len(f1))
        assert_same_result(mp, mr)
        assert len(mr) > 200
        stops.add(mr.extras["stop"])
    assert len(stops) > 1 if adaptive == "depth+width" else stops == {9}


@pytest.mark.slow
@pytest.mark.parametrize("features", ["superpoint", "sift"])
def test_readable_network_equals_packed_engine_other_inputs(datasets_root, features):
    """The 256-d input (no projection) and the 4-D rotary encoding (SIFT scale and
    orientation), with random weights on real features; and the official ALIKED weights."""
    ext = load_extractor(features, resize=640, max_keypoints=384)
    f0, f1 = (ext(datasets_root / f"oxford_graf/img{i}.png") for i in (1, 2))
    torch.manual_seed(0)
    model = LightGlue(features=features, weights=None, filter_threshold=0.0)
    packed, readable = model(f0, f1), model.forward_readable(f0, f1)
    assert_same_result(packed, readable)
    assert len(readable) > 0


@pytest.mark.slow
def test_readable_network_equals_packed_engine_aliked(datasets_root):
    ext = load_extractor("aliked", resize=640, max_keypoints=1024)
    f0, f1 = (ext(datasets_root / f"lightglue_assets/sacre_coeur{i}.jpg") for i in (1, 2))
    model = LightGlue(features="aliked")
    readable = model.forward_readable(f0, f1)
    assert_same_result(model(f0, f1), readable)
    assert len(readable) > 100


# ------------------------------------------------------------------ batching
@pytest.mark.slow
def test_batch_equals_single(disk_feats):
    f = disk_feats
    pairs = [(f["graf1"], f["graf2"]), (f["graf1"], f["graf3"]), (f["sc1"], f["sc2"]),
             (f["graf2"], f["graf1"])]
    model = LightGlue(features="disk", batch_size=3)  # two packed passes, shared images
    batch = model.match_batch(pairs)
    stops = set()
    for (f0, f1), mb in zip(pairs, batch):
        model.engine.images.clear()  # nothing from the batch run
        ms = model(f0, f1)
        check_matches(mb, len(f0), len(f1))
        assert (mb.matches0 == ms.matches0).float().mean() >= 0.995
        assert mb.extras["stop"] == ms.extras["stop"]
        stops.add(ms.extras["stop"])
    assert len(stops) > 1  # pairs really exit at different layers inside one batch


@pytest.mark.slow
def test_auto_batch_packs_pairs_by_keypoints(disk_feats):
    """batch_size "auto" packs consecutive pairs while their keypoints fit in
    keypoints_per_call (each pass at least one pair); results equal one pair at a time."""
    f = disk_feats
    pairs = [(f["graf1"], f["graf2"]), (f["graf1"], f["graf3"]),
             (f["graf2"].subset(torch.arange(100)), f["graf3"]), (f["sc1"], f["sc2"])]
    sizes = [len(a) + len(b) for a, b in pairs]
    model = LightGlue(features="disk")
    assert model.conf["batch_size"] == "auto"
    assert sizes == [2048, 2048, 1124, 2048]
    model.keypoints_per_call = 4095  # two pairs of 2,048 do not fit; 2,048 + 1,124 do
    assert model._packs(list(range(len(pairs))), pairs) == [[0], [1, 2], [3]]
    auto = model.match_batch(pairs)
    single = LightGlue(features="disk", batch_size=1)
    for (f0, f1), got in zip(pairs, auto):
        single.engine.images.clear()
        assert (got.matches0 == single(f0, f1).matches0).float().mean() >= 0.995
    assert LightGlue(features="disk").batch_size_for(2048) == 4
    assert LightGlue(features="disk").batch_size_for(512) == 16
    assert LightGlue(features="disk").batch_size_for(8192) == 1
    with pytest.raises(ConfigError, match="batch_size"):
        LightGlue(features="disk", weights=None, batch_size=0)


def test_zero_and_one_keypoints(disk_feats):
    model = LightGlue(features="disk")
    full = disk_feats["graf1"]
    none = full.subset(torch.zeros(len(full), dtype=torch.bool))
    one = full.subset(torch.arange(1))
    pairs = [(none, full), (full, none), (one, full), (full, one), (one, one), (none, none)]
    out = model.match_batch(pairs)
    for m, (a, b), (f0, f1) in zip(out, [(0, 1024), (1024, 0), (1, 1024), (1024, 1), (1, 1), (0, 0)], pairs):
        check_matches(m, a, b)
        assert torch.equal(m.matches0, model.forward_readable(f0, f1).matches0)
    assert out[4].matches0.tolist() in ([0], [-1])
    cands, scores = model.candidates(none, full, 3)
    assert cands.shape == (0, 3) and scores.shape == (0, 3)


def test_candidates_top_k(disk_feats):
    f0, f1 = disk_feats["graf1"].subset(torch.arange(300)), disk_feats["graf2"].subset(torch.arange(300))
    model = LightGlue(features="disk", depth_confidence=-1, width_confidence=-1)
    cand, score = model.candidates(f0, f1, 4)
    m = model(f0, f1)
    assert cand.shape == (300, 4) and score.shape == (300, 4)
    assert ((score >= 0) & (score <= 1)).all() and (score[:, :-1] >= score[:, 1:]).all()
    valid = m.matches0 > -1
    assert torch.equal(cand[valid, 0], m.matches0[valid])      # a match is its row's best candidate
    assert torch.allclose(score[valid, 0], m.scores0[valid])


# ------------------------------------------------------------------ rotations
@pytest.mark.slow
def test_rotations_option(disk_feats):
    """rotations=[0, 90, 180, 270] with image 1's keypoints in a rotated frame (what a
    rotation-invariant descriptor gives) recovers the upright matches."""
    f0, f1 = disk_feats["graf1"], disk_feats["graf2"]
    upright = LightGlue(features="disk")(f0, f1)
    model = LightGlue(features="disk", rotations=[0, 90, 180, 270])
    m = model(f0, rotate_features(f1, 90))
    assert m.extras["rotation"] == 270
    assert (m.matches0 == upright.matches0).float().mean() >= 0.995
    # (same descriptors at every angle here, so the other angles still match many points)
    assert m.extras["matches_per_rotation"][270] == len(m) == len(upright)


# ------------------------------------------------------------------ accuracy
@pytest.mark.slow
def test_precision_on_graf_beats_mutual_nn(disk_feats, datasets_root):
    """DISK + LightGlue vs DISK + mutual NN (same features: long side 640, 1024 kpts).
    Measured (CPU, torch 2.13): LightGlue 1->2 0.869 (513 matches), 1->3 0.699 (535);
    NN 0.819 (487), 0.640 (492). Floors about 0.05 below."""
    lg, nn = LightGlue(features="disk"), load_matcher("nn")
    f0 = disk_feats["graf1"]
    for target, floor in ((2, 0.82), (3, 0.65)):
        f1 = disk_feats[f"graf{target}"]
        H = np.loadtxt(datasets_root / f"oxford_graf/H1to{target}p")
        prec = {}
        for name, matcher in (("lightglue", lg), ("nn", nn)):
            idx = matcher(f0, f1).pairs().numpy()
            err = reprojection_errors(H, f0.keypoints.numpy()[idx[:, 0]], f1.keypoints.numpy()[idx[:, 1]])
            prec[name] = ((err < 3).mean(), len(idx))
        assert prec["lightglue"][0] >= floor, prec
        assert prec["lightglue"][0] > prec["nn"][0] + 0.03, prec
        assert prec["lightglue"][1] > 300, prec
