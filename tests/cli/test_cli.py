"""`matchlab` CLI end to end on real images: extract (SIFT) with a corrupt JPEG in the folder,
match, resume, clear errors for bad pairs files and options, weights / datasets commands."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from matchlab.cli import COMMANDS, main
from matchlab.store import FeatureStore, MatchStore

SIFT = ["--features", "sift", "--resize", "640", "--max-keypoints", "512"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, datasets_root):
    """images/: graf img1..img3 (in a subfolder), one real JPEG, one truncated JPEG;
    features.h5 extracted once for the module (SIFT is fast)."""
    root = tmp_path_factory.mktemp("cli")
    images = root / "images"
    (images / "graf").mkdir(parents=True)
    for i in (1, 2, 3):
        shutil.copy(datasets_root / "oxford_graf" / f"img{i}.png", images / "graf" / f"img{i}.png")
    jpeg = (datasets_root / "lightglue_assets" / "sacre_coeur1.jpg").read_bytes()
    (images / "sacre_coeur1.jpg").write_bytes(jpeg)
    (images / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # a truncated real JPEG
    return root


@pytest.fixture(scope="module")
def extracted(workspace):
    features = workspace / "features.h5"
    code = main(["extract", str(workspace / "images"), str(features), *SIFT])
    assert code == 0
    return features


def count(summary: str, label: str) -> int:
    """The number on the summary row `label` (e.g. '  skipped      4  already in ...')."""
    rows = [line.split() for line in summary.splitlines() if line.strip().startswith(label)]
    assert rows, f"no {label!r} row in:\n{summary}"
    return int(rows[0][1])


GOOD = ["graf/img1.png", "graf/img2.png", "graf/img3.png", "sacre_coeur1.jpg"]


def test_extract_skips_the_corrupt_jpeg_and_resumes(workspace, extracted, capsys):
    with FeatureStore(extracted, mode="r") as store:
        assert store.names() == GOOD
        f = store.read("graf/img1.png")
        assert f.image_size == (800, 640) and 0 < len(f) <= 512
        assert f.descriptors.shape[1] == 128 and f.lafs is not None
        # extracted at 640 px, stored in original pixels
        assert f.keypoints[:, 0].max() > 640
    # a second run has nothing left to do; the broken image is reported again
    capsys.readouterr()
    assert main(["extract", str(workspace / "images"), str(extracted), *SIFT]) == 0
    out, err = capsys.readouterr()
    assert count(out, "skipped") == 4 and count(out, "extracted") == 0
    assert count(out, "failed") == 1
    assert "broken.jpg" in out and "broken.jpg" in err and "truncated" in out


def test_extract_refuses_to_mix_extractors(workspace, extracted, capsys):
    code = main(["extract", str(workspace / "images"), str(extracted), "--features", "sift",
                 "--resize", "320"])
    assert code == 1
    err = capsys.readouterr().err
    assert "already holds features" in err and str(extracted) in err


def test_match_end_to_end_with_ground_truth(workspace, extracted, datasets_root, capsys):
    pairs = workspace / "pairs.txt"
    pairs.write_text("# graf pairs\ngraf/img1.png graf/img2.png\n\n"
                     "graf/img1.png graf/img3.png\ngraf/img2.png graf/img1.png\n")
    matches = workspace / "matches.h5"
    assert main(["match", str(extracted), str(pairs), str(matches),
                 "--matcher-conf", "ratio_threshold=0.9"]) == 0
    out = capsys.readouterr().out
    assert "matched" in out and "repeated" in out
    assert "8 pairs a call" in out  # --batch-size auto: mutual NN works pair by pair
    H = np.loadtxt(datasets_root / "oxford_graf" / "H1to2p")
    with FeatureStore(extracted, mode="r") as store, MatchStore(matches, mode="r") as ms:
        assert ("graf/img2.png", "graf/img1.png") in ms and ("graf/img1.png", "graf/img3.png") in ms
        idx, scores = ms.read_pairs("graf/img1.png", "graf/img2.png")
        k0, k1 = store.read_keypoints("graf/img1.png"), store.read_keypoints("graf/img2.png")
    assert len(idx) > 50 and (scores > 0).all() and (scores <= 1).all()
    p = np.c_[k0[idx[:, 0]], np.ones(len(idx))] @ H.T
    err = np.linalg.norm(p[:, :2] / p[:, 2:] - k1[idx[:, 1]], axis=1)
    assert np.mean(err < 5) > 0.8  # SIFT + NN on graf 1-2: the matches are correct

    # resume: a pairs file with one more pair computes only that one
    pairs.write_text(pairs.read_text() + "graf/img3.png sacre_coeur1.jpg\n")
    capsys.readouterr()
    assert main(["match", str(extracted), str(pairs), str(matches),
                 "--matcher-conf", "ratio_threshold=0.9", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert count(out, "matched") == 1 and count(out, "skipped") == 2  # batch size is neutral
    assert "2 pairs a call" in out
    for bad in ("0", "many"):
        with pytest.raises(SystemExit) as exit_info:
            main(["match", str(extracted), str(pairs), str(matches), "--batch-size", bad])
        assert exit_info.value.code == 2
        assert "--batch-size: must be 'auto' or a positive integer" in capsys.readouterr().err


def test_match_refuses_pairs_naming_missing_images(workspace, extracted, capsys):
    pairs = workspace / "pairs_missing.txt"
    pairs.write_text("graf/img1.png graf/img2.png\ngraf/img1.png broken.jpg\n")
    out_path = workspace / "matches_missing.h5"
    assert main(["match", str(extracted), str(pairs), str(out_path)]) == 1
    err = capsys.readouterr().err
    assert "'broken.jpg' (line 2)" in err and str(extracted) in err and "--skip-missing" in err
    assert not out_path.exists()  # refused before any work
    assert main(["match", str(extracted), str(pairs), str(out_path), "--skip-missing"]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "broken.jpg" in out
    with MatchStore(out_path, mode="r") as ms:
        assert ("graf/img1.png", "graf/img2.png") in ms
        assert ("graf/img1.png", "broken.jpg") not in ms


def test_match_bad_inputs_give_clear_errors(workspace, extracted, capsys):
    pairs = workspace / "pairs_bad.txt"
    pairs.write_text("graf/img1.png graf/img2.png\ngraf/img1.png\n")
    assert main(["match", str(extracted), str(pairs), str(workspace / "m.h5")]) == 1
    assert "line 2" in capsys.readouterr().err
    pairs.write_text("graf/img1.png graf/img2.png\n")
    assert main(["match", str(extracted), str(pairs), str(workspace / "m.h5"),
                 "--matcher-conf", "ratio=0.8"]) == 1
    assert "valid options" in capsys.readouterr().err
    assert main(["match", str(workspace / "nope.h5"), str(pairs), str(workspace / "m.h5")]) == 1
    assert "nope.h5" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["extract", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "(default: superpoint)" in text and "(default: 1024)" in text
    assert "local feature extractor: aliked, disk, sift, superpoint" in " ".join(text.split())
    with pytest.raises(SystemExit):
        main(["match", "--help"])
    assert "(default: nn)" in capsys.readouterr().out
    assert main([]) == 2 and main(["weights"]) == 2
    assert "exit status:" in text and "130  interrupted" in text


def test_weights_and_datasets_commands(capsys):
    assert main(["weights", "list"]) == 0
    assert "superpoint_v1.pth" in capsys.readouterr().out
    assert main(["weights", "fetch", "no_such.pth"]) == 1
    assert "unknown weight" in capsys.readouterr().err
    assert main(["weights", "fetch"]) == 1
    assert main(["weights", "fetch", "superpoint_v1.pth"]) == 0
    assert "superpoint_v1.pth" in capsys.readouterr().out
    assert main(["datasets", "list"]) == 0
    assert "oxford_graf" in capsys.readouterr().out
    assert main(["datasets", "fetch", "no_such_dataset"]) == 1
    assert "no_such_dataset" in capsys.readouterr().err


def test_weights_verify_exit_status(tmp_path, shared_weights, monkeypatch, capsys):
    """0 when every cached file is intact (missing ones are fine), 1 naming a corrupt one."""
    monkeypatch.setenv("MATCHLAB_WEIGHTS_DIR", str(tmp_path))
    shutil.copy(shared_weights / "AffNet.pth", tmp_path / "AffNet.pth")
    assert main(["weights", "verify"]) == 0
    out, err = capsys.readouterr()
    assert "ok       AffNet.pth" in out and "missing  OriNet.pth" in out and not err
    (tmp_path / "OriNet.pth").write_bytes((shared_weights / "OriNet.pth").read_bytes()[:-10])
    assert main(["weights", "verify"]) == 1
    out, err = capsys.readouterr()
    assert "corrupt  OriNet.pth" in out and "corrupt: OriNet.pth" in err
    assert "AffNet.pth" not in err


def test_salvage_command(workspace, extracted, capsys):
    assert main(["salvage", str(extracted)]) == 0
    assert "nothing to salvage" in capsys.readouterr().out
    damaged = workspace / "damaged.h5"
    damaged.write_bytes(extracted.read_bytes()[:-1000])  # the tail of the last item is gone
    assert main(["extract", str(workspace / "images"), str(damaged), *SIFT]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and f"matchlab salvage {damaged}" in err
    assert main(["salvage", str(damaged)]) == 0
    assert "kept 3 intact items" in capsys.readouterr().out
    assert (workspace / "damaged.h5.corrupt").is_file()
    assert main(["extract", str(workspace / "images"), str(damaged), *SIFT]) == 0
    with FeatureStore(damaged, mode="r") as store:
        assert store.names() == GOOD
