"""Wiring of matchers into the pipeline and `matchlab eval`: a matcher whose weights depend on
the extractor gets its name; a matcher that estimates the geometry itself (AffineGlue) is
scored on its own model (`--estimator matcher`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matchlab.cli import main
from matchlab.registry import load_extractor, load_matcher


def test_load_matcher_for_features_fills_features_only_where_it_exists():
    assert load_matcher("lightglue", for_features="disk").conf["features"] == "disk"
    # an explicit choice wins; matchers without a `features` option ignore it
    assert load_matcher("lightglue", for_features="disk", features="aliked").conf["features"] == "aliked"
    assert "features" not in load_matcher("nn", for_features="disk").conf
    ag = load_matcher("affineglue", base="lightglue", for_features="disk")
    assert ag.base.conf["features"] == "disk"


def test_matcher_estimator_needs_a_matcher_that_estimates(tmp_path, capsys):
    """`--estimator matcher` with a matcher that returns no model is a clear error."""
    from matchlab.evaluation.pose import evaluate_pose
    from matchlab.registry import load_extractor

    with pytest.raises(ValueError, match="estimates none"):
        evaluate_pose("superglue_scannet_sample", load_extractor("sift", resize=None),
                      load_matcher("nn"), ["matcher"])


@pytest.mark.slow
def test_eval_homography_scores_affineglue_own_model(tmp_path, capsys):
    """SIFT (own affine frames, long side 640, 1024 keypoints) on the 5 Graffiti pairs.
    Measured: AffineGlue (nn base) on its own homography AUC@5px 48.9, precision 59.3 %;
    OpenCV RANSAC on AffineGlue's inliers 42.2; OpenCV RANSAC on plain mutual NN matches
    31.0, precision 32.7 %."""
    out = tmp_path / "eval"
    common = ["--features", "sift", "--max-keypoints", "1024", "--dataset", "oxford_graf",
              "--output", str(out)]
    assert main(["eval", "homography", "--matcher", "affineglue",
                 "--estimator", "ransac", "matcher", *common]) == 0
    assert main(["eval", "homography", "--matcher", "nn", "--estimator", "ransac", *common]) == 0
    ag = {r["estimator"]: r for r in json.loads((out / "eval_homography_sift_affineglue.json").read_text())}
    nn = json.loads((out / "eval_homography_sift_nn.json").read_text())[0]
    assert set(ag) == {"ransac", "matcher"}
    assert ag["matcher"]["auc@5px"] >= 0.40, ag["matcher"]["auc@5px"]
    assert ag["matcher"]["auc@5px"] > nn["auc@5px"] + 0.08, (ag["matcher"]["auc@5px"], nn["auc@5px"])
    assert ag["matcher"]["precision@3px"] > nn["precision@3px"] + 0.15
    assert "sift+affineglue  oxford_graf  matcher" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_retrieval_cli_vlad(tmp_path, capsys):
    """`matchlab eval retrieval --global vlad` on three datasets of the labelled mix (SIFT,
    long side 512, 1024 keypoints): 20 queries of 3 scenes."""
    out = tmp_path / "eval"
    assert main(["eval", "retrieval", "--global", "vlad", "--features", "sift", "--resize", "512",
                 "--max-keypoints", "1024", "--dataset", "hloc_sacre_coeur", "oxford_graf",
                 "kapture_maupertuis_colmap", "--output", str(out)]) == 0
    result = json.loads((out / "eval_retrieval_sift_vlad.json").read_text())[0]
    assert result["method"] == "vlad" and result["queries"] == 20
    assert result["R@1"] >= 0.8, result["R@1"]
    assert "global descriptor vlad" in capsys.readouterr().out


# ------------------------------------------------------------------ gravity for AffineGlue
@pytest.fixture(scope="module")
def graf_sift(datasets_root, tmp_path_factory):
    """SIFT features (own affine frames) of graf img1, img2 and a pairs file."""
    folder = tmp_path_factory.mktemp("graf")
    images = folder / "images"
    images.mkdir()
    for i in (1, 2):
        (images / f"img{i}.png").write_bytes((datasets_root / f"oxford_graf/img{i}.png").read_bytes())
    assert main(["extract", str(images), str(folder / "features.h5"), "--features", "sift",
                 "--resize", "512", "--max-keypoints", "512"]) == 0
    (folder / "pairs.txt").write_text("img1.png img2.png\n")
    return folder


def test_gravity_file_reaches_affineglue(graf_sift, tmp_path):
    from matchlab.matchers.affineglue import AffineGlue
    from matchlab.pipeline import match_pairs

    seen = []

    class Recording(AffineGlue):
        def match_batch(self, pairs, intrinsics=None, gravity=None):
            seen.append(gravity)
            return super().match_batch(pairs, intrinsics=intrinsics, gravity=gravity)

    g = {"img1.png": [0.0, 1.0, 0.0], "img2.png": [0.1, 0.99, 0.0]}
    report = match_pairs([("img1.png", "img2.png")], graf_sift / "features.h5",
                         tmp_path / "m.h5", Recording(), progress=False, gravity=g)
    assert report.done == 1 and report.matches > 20
    assert seen == [[(g["img1.png"], g["img2.png"])]]
    with pytest.raises(ValueError, match="gravity prior"):
        match_pairs([("img1.png", "img2.png")], graf_sift / "features.h5", tmp_path / "n.h5",
                    load_matcher("nn"), progress=False, gravity=g)


def test_gravity_option_of_matchlab_match(graf_sift, tmp_path, capsys):
    gravity = tmp_path / "gravity.txt"
    gravity.write_text("# name gx gy gz\nimg1.png 0 1 0\nimg2.png 0 1 0\n")
    args = [str(graf_sift / "features.h5"), str(graf_sift / "pairs.txt")]
    assert main(["match", *args, str(tmp_path / "ag.h5"), "--matcher", "affineglue",
                 "--gravity", str(gravity)]) == 0
    assert "matched       1" in capsys.readouterr().out
    assert main(["match", *args, str(tmp_path / "nn.h5"), "--gravity", str(gravity)]) != 0
    assert "gravity prior" in capsys.readouterr().err
    gravity.write_text("img1.png 0 1\n")
    assert main(["match", *args, str(tmp_path / "x.h5"), "--matcher", "affineglue",
                 "--gravity", str(gravity)]) != 0
    assert "gravity.txt:1" in capsys.readouterr().err


def test_sfm_refuses_gravity_for_a_matcher_without_prior(graf_sift, tmp_path, capsys):
    gravity = tmp_path / "gravity.txt"
    gravity.write_text("img1.png 0 1 0\n")
    assert main(["sfm", str(graf_sift / "images"), str(tmp_path / "out"), "--matcher", "nn",
                 "--gravity", str(gravity)]) != 0
    assert "gravity prior" in capsys.readouterr().err
    assert not (tmp_path / "out" / "features.h5").exists()  # refused before any work


def test_matcher_verified_matches_go_straight_into_the_database(graf_sift, tmp_path):
    """AffineGlue's matches are the inliers of its own estimate: `import_verified` writes them
    as two-view geometries (configuration set, not UNDEFINED) and `verify` then skips the pair."""
    import pycolmap

    from matchlab.matchers.affineglue import AffineGlue
    from matchlab.pipeline import match_pairs
    from matchlab.sfm import create_database, import_verified, verify
    from matchlab.store import FeatureStore, MatchStore

    assert AffineGlue.capabilities.verifies_geometry
    assert not load_matcher("nn").capabilities.verifies_geometry
    pairs = [("img1.png", "img2.png")]
    match_pairs(pairs, graf_sift / "features.h5", tmp_path / "m.h5", AffineGlue(), progress=False)
    with FeatureStore(graf_sift / "features.h5", "r") as f, MatchStore(tmp_path / "m.h5", "r") as m:
        keypoints = {n: f.read_keypoints(n) for n in ("img1.png", "img2.png")}
        matches = {pairs[0]: m.read_pairs(*pairs[0])[0]}
    assert len(matches[pairs[0]]) > 20
    db = tmp_path / "database.db"
    create_database(db, graf_sift / "images", ["img1.png", "img2.png"], keypoints, matches)
    assert import_verified(db, pairs) == 1
    assert import_verified(db, pairs) == 0  # already there: left alone
    with pycolmap.Database.open(str(db)) as d:
        _, [geometry] = d.read_two_view_geometries()
    assert geometry.config == pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
    assert len(geometry.inlier_matches) == len(matches[pairs[0]])
    assert verify(db, pairs)["pairs_already_verified"] == 1


def test_run_sfm_imports_affineglue_geometries(datasets_root, tmp_path):
    """In `run_sfm` the pairs matched by AffineGlue are verified by its own estimate, not by
    COLMAP's RANSAC (which would label these planar graf pairs PLANAR / re-select inliers).
    Measured: 3 / 3 images registered, every pair UNCALIBRATED with all its matches."""
    import pycolmap

    from matchlab.pipeline import SfMConfig, run_sfm

    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2, 3):
        (images / f"img{i}.png").write_bytes((datasets_root / f"oxford_graf/img{i}.png").read_bytes())
    summary = run_sfm(images, tmp_path / "out", SfMConfig(features="sift", matcher="affineglue",
                                                          resize=512, max_keypoints=512),
                      progress=False, log=lambda line: None, plots=0, report=False)
    assert summary["num_reg_images"] == 3
    with pycolmap.Database.open(str(tmp_path / "out" / "database.db")) as db:
        pair_ids, geometries = db.read_two_view_geometries()
        raw = dict(zip(*db.read_all_matches()))
    assert len(geometries) == 3
    for pair_id, geometry in zip(pair_ids, geometries):
        assert geometry.config == pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
        assert len(geometry.inlier_matches) == len(raw[pair_id]) > 20


@pytest.mark.slow
def test_real_gravity_fixes_affineglue_pose_on_strecha():
    """Gravity from the ground-truth cameras (level world) reaches AffineGlue through
    evaluate_pose, and its 1AC + gravity hypotheses then get the pose right where the upright
    assumption fails (cameras pitched 2-7 degrees). LO-RANSAC start off, so only the AC
    hypotheses count. Measured on these pairs: upright 2.76 / 3.75 / 8.60 deg, gravity
    0.07 / 0.05 / 0.22 deg (all 55 pairs: AUC@2 66.4 -> 85.3, benchmarks/gravity_prior.py)."""
    from matchlab.datasets.readers import strecha_gravity
    from matchlab.evaluation.pose import evaluate_pose

    extractor = load_extractor("disk", max_keypoints=2048, resize=None, lafs="affnet")
    matcher = load_matcher("affineglue", base="lightglue", features="disk", model="essential",
                           lo_ransac_seed=False)
    pairs = [("0000.jpg", "0004.jpg"), ("0002.jpg", "0005.jpg"), ("0002.jpg", "0010.jpg")]
    cache, errors = {}, {}
    for name, gravity in (("upright", None), ("gravity", strecha_gravity())):
        out = evaluate_pose("strecha_fountain_P11", extractor, matcher, ("matcher",), seeds=(0,),
                            gravity=gravity, feature_cache=cache, only_pairs=pairs, progress=False)
        assert out["gravity"] == (gravity is not None) and out["num_pairs"] == 3
        errors[name] = [row["errors_deg"]["matcher"][0] for row in out["pairs"]]
    assert max(errors["gravity"]) < 0.5, errors
    assert np.mean(errors["upright"]) > 2.0, errors
    with pytest.raises(ValueError, match="no pose pair 0000.jpg 0000.jpg"):
        evaluate_pose("strecha_fountain_P11", extractor, matcher, ("matcher",),
                      only_pairs=[("0000.jpg", "0000.jpg")])
    with pytest.raises(ValueError, match="gravity directions apply"):
        evaluate_pose("strecha_fountain_P11", extractor, load_matcher("nn"), ("ransac",),
                      gravity=strecha_gravity(), only_pairs=pairs[:1])


def test_matchlab_match_affineglue_on_features_without_frames(graf_sift, datasets_root, tmp_path,
                                                             capsys):
    """A features.h5 without lafs (SuperPoint): AffineGlue refuses it with a hint, and runs on it
    with affines=neighbours; its matches follow graf's true homography."""
    from matchlab.datasets.readers import read_homography
    from matchlab.geometry.primitives.homography import reprojection_errors
    from matchlab.store import FeatureStore, MatchStore

    features = tmp_path / "sp.h5"
    assert main(["extract", str(graf_sift / "images"), str(features), "--features", "superpoint",
                 "--resize", "512", "--max-keypoints", "512"]) == 0
    pairs = str(graf_sift / "pairs.txt")
    assert main(["match", str(features), pairs, str(tmp_path / "x.h5"), "--matcher", "affineglue"]) != 0
    assert "needs local affine frames" in capsys.readouterr().err
    assert main(["match", str(features), pairs, str(tmp_path / "m.h5"), "--matcher", "affineglue",
                 "--matcher-conf", "affines=neighbours"]) == 0
    with FeatureStore(features, mode="r") as fs, MatchStore(tmp_path / "m.h5", mode="r") as ms:
        k0, k1 = fs.read_keypoints("img1.png"), fs.read_keypoints("img2.png")
        idx, _ = ms.read_pairs("img1.png", "img2.png")
    H = read_homography(datasets_root / "oxford_graf" / "H1to2p")
    err = reprojection_errors(H, k0[idx[:, 0]], k1[idx[:, 1]])
    assert len(idx) > 30 and np.mean(err < 3) > 0.9, (len(idx), np.mean(err < 3))
