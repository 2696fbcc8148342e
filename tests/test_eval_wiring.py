"""Wiring of matchers into the pipeline and `matchlab eval`: a matcher whose weights depend on
the extractor gets its name; a matcher that estimates the geometry itself (AffineGlue) is
scored on its own model (`--estimator matcher`)."""
from __future__ import annotations

import json

import pytest

from matchlab.cli import main
from matchlab.registry import load_matcher


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
    Measured: AffineGlue (nn base) on its own homography AUC@5px 48.9; OpenCV RANSAC on
    AffineGlue's inliers 42.2; OpenCV RANSAC on plain mutual NN matches 31.0."""
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
