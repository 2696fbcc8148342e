"""The `precision` option (matchlab.precision): what "auto" resolves to, what is refused, what
output files record, and bfloat16 against float32 on a real image pair for every network."""
from __future__ import annotations

import pytest
import torch

from matchlab import ConfigError, load_extractor, load_matcher
from matchlab import precision as P
from matchlab.pipeline import check_model_record, model_record
from matchlab.store import FeatureStore

NETWORKS = [("extractor", "superpoint"), ("extractor", "disk"), ("extractor", "aliked"),
            ("matcher", "superglue"), ("matcher", "lightglue")]
CLASS = {"superpoint": "SuperPoint", "disk": "DISK", "aliked": "ALIKED",
         "superglue": "SuperGlue", "lightglue": "LightGlue"}


def build(kind: str, name: str, **conf):
    load = load_extractor if kind == "extractor" else load_matcher
    extra = {"for_features": "disk"} if name == "lightglue" else {}
    return load(name, weights=None, **extra, **conf) if name in ("superglue", "lightglue") \
        else load(name, **conf)


def test_cpu_detection_reads_the_flags(monkeypatch):
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not P.native_bfloat16("cpu")
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert P.native_bfloat16("cpu")
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"amx_tile", "amx_bf16"}))
    assert P.native_bfloat16("cpu")
    assert not P.native_bfloat16("meta")


@pytest.mark.parametrize("kind,name", NETWORKS)
def test_auto_is_bfloat16_only_with_native_support_and_a_measured_model(kind, name, monkeypatch):
    monkeypatch.delenv(P.AUTO_ENV)  # the suite's pin (conftest)
    monkeypatch.setitem(P.AUTO_BFLOAT16, CLASS[name], "test")
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx2"}))  # no bf16 on this CPU
    model = build(kind, name)
    assert model.compute_dtype() == torch.float32
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert model.compute_dtype() == torch.bfloat16
    assert model_record(name, model)["conf"]["precision"] == "bfloat16"
    monkeypatch.delitem(P.AUTO_BFLOAT16, CLASS[name])  # not measured: float32 anyway
    assert model.compute_dtype() == torch.float32
    assert build(kind, name, precision="bfloat16").compute_dtype() == torch.bfloat16
    monkeypatch.setitem(P.AUTO_BFLOAT16, CLASS[name], "test")
    monkeypatch.setenv(P.AUTO_ENV, "float32")  # the user's pin
    assert model.compute_dtype() == torch.float32
    monkeypatch.setenv(P.AUTO_ENV, "bfloat16")
    with pytest.raises(ConfigError, match="MATCHLAB_AUTO_PRECISION"):
        model.compute_dtype()


def test_float32_only_models_refuse_bfloat16_and_record_no_precision():
    with pytest.raises(ConfigError, match="SIFT: precision must be one of"):
        load_extractor("sift", precision="bfloat16")
    with pytest.raises(ConfigError, match="NearestNeighbor: precision"):
        load_matcher("nn", precision="bfloat16")
    with pytest.raises(ConfigError, match="DISK: precision must be one of"):
        load_extractor("disk", precision="half")
    assert "precision" not in model_record("sift", load_extractor("sift"))["conf"]
    # AffineGlue passes it to its base, which decides
    with pytest.raises(ConfigError, match="NearestNeighbor: precision"):
        load_matcher("affineglue", base="nn", precision="bfloat16")


def test_files_keep_the_resolved_precision(tmp_path, monkeypatch):
    """A file made in bfloat16 refuses float32 additions; a file recorded before `precision`
    existed (or with "auto") counts as float32, as those runs computed on the CPU."""
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset())
    f32 = model_record("superpoint", load_extractor("superpoint"))
    bf16 = model_record("superpoint", load_extractor("superpoint", precision="bfloat16"))
    assert f32["conf"]["precision"] == "float32" and bf16["conf"]["precision"] == "bfloat16"
    with FeatureStore(tmp_path / "a.h5", "a") as store:
        check_model_record(store, "matchlab_extractor", bf16, "features", "--precision")
        with pytest.raises(ValueError, match="precision='bfloat16'"):
            check_model_record(store, "matchlab_extractor", f32, "features", "--precision")
    old = {"name": "superpoint", "conf": {k: v for k, v in f32["conf"].items()
                                          if k != "precision"}}
    for i, legacy in enumerate([old, {**old, "conf": {**old["conf"], "precision": "auto"}}]):
        with FeatureStore(tmp_path / f"old{i}.h5", "a") as store:
            check_model_record(store, "matchlab_extractor", legacy, "features", "--precision")
            check_model_record(store, "matchlab_extractor", f32, "features", "--precision")
            with pytest.raises(ValueError):
                check_model_record(store, "matchlab_extractor", bf16, "features", "--precision")


# ---------------------------------------------------------------- bfloat16 against float32

@pytest.fixture(scope="module")
def graf_pair(datasets_root):
    from matchlab.images import read_image

    return [read_image(datasets_root / "oxford_graf" / f"img{i}.png") for i in (1, 3)]


def within_1px(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of the points a [N, 2] with a point of b [M, 2] within 1 px."""
    return float((torch.cdist(a, b).min(1).values < 1).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize("name,floor", [("superpoint", 0.88), ("disk", 0.85), ("aliked", 0.93)])
def test_extractor_bfloat16_agrees_with_float32(name, floor, graf_pair):
    """Graf 1 at long side 640, 2048 keypoints. Measured (AVX512-BF16 CPU): 92 % (SuperPoint),
    90 % (DISK), 98 % (ALIKED) of the bfloat16 keypoints lie within 1 px of a float32 one; the
    rest are maxima whose order the rounding swapped. Descriptors of the shared keypoints
    agree to a cosine > 0.99."""
    f32 = load_extractor(name, resize=640, max_keypoints=2048, precision="float32")(graf_pair[0])
    bf16 = load_extractor(name, resize=640, max_keypoints=2048, precision="bfloat16")(graf_pair[0])
    assert bf16.keypoints.dtype == bf16.descriptors.dtype == bf16.scores.dtype == torch.float32
    assert abs(len(bf16) - len(f32)) <= 0.02 * len(f32)
    assert within_1px(bf16.keypoints, f32.keypoints) >= floor
    dist, nearest = torch.cdist(bf16.keypoints, f32.keypoints).min(1)
    same = dist < 0.5
    cos = (bf16.descriptors[same] * f32.descriptors[nearest[same]]).sum(1)
    assert cos.median() > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name,features", [("lightglue", "disk"), ("superglue", "superpoint")])
def test_matcher_bfloat16_agrees_with_float32(name, features, graf_pair):
    """Graf 1-3 at long side 640, 1024 keypoints, float32 features. Measured: 99.6 % of
    LightGlue's (DISK) and 96.6 % of SuperGlue's (outdoor) matches0 equal."""
    extractor = load_extractor(features, resize=640, max_keypoints=1024, precision="float32")
    f0, f1 = (extractor(image) for image in graf_pair)
    conf = {"weights": "outdoor"} if name == "superglue" else {}
    ref = load_matcher(name, for_features=features, precision="float32", **conf)(f0, f1)
    bf16 = load_matcher(name, for_features=features, precision="bfloat16", **conf)(f0, f1)
    assert bf16.scores0.dtype == torch.float32
    assert (bf16.matches0 == ref.matches0).float().mean() >= 0.95
    assert abs(len(bf16) - len(ref)) <= 0.05 * len(ref)


def test_cli_precision_is_recorded_and_refuses_mixing(tmp_path, datasets_root, capsys):
    """`--precision` reaches the extractor, the features file records it, a float32 run
    into that file is refused; SIFT (float32 only) ignores it."""
    import json
    import shutil

    from matchlab.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2):
        shutil.copy(datasets_root / "oxford_graf" / f"img{i}.png", images / f"img{i}.png")
    small = ["--resize", "320", "--max-keypoints", "256"]
    out = tmp_path / "sp.h5"
    assert main(["extract", str(images), str(out), "--precision", "bfloat16", *small]) == 0
    with FeatureStore(out, "r") as store:
        record = json.loads(store.file.attrs["matchlab_extractor"])
    assert record["conf"]["precision"] == "bfloat16"
    capsys.readouterr()
    assert main(["extract", str(images), str(out), "--precision", "float32", *small]) == 1
    assert "precision='bfloat16'" in capsys.readouterr().err
    assert main(["extract", str(images), str(tmp_path / "sift.h5"), "--features", "sift",
                 "--precision", "bfloat16", *small]) == 0
