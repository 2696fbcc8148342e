"""Mapper choice (incremental / global / hierarchical / auto) and the verification budget.

Fast tests use test_sfm's synthetic scene (grey images, exact projections); the slow ones
fountain-P11 with OpenCV SIFT (test_sfm's `fountain` fixture) against its ground truth.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from matchlab.cli import build_parser
from matchlab.cli.sfm import AUTO_HELP
from matchlab.sfm import (align_and_compare, create_database, model_summary, read_image_ids,
                          reconstruct, verify)
from matchlab.sfm.verification import _two_view_options, plan_budget
from matchlab.sfm.reconstruction import (AUTO_MAPPER_RULE, MAPPERS, _pipeline_options,
                                         describe_auto_rule, pick_mapper)
from sfm.test_sfm import MAP_OPTIONS, synthetic_scene

# ---------------------------------------------------------------------------- mapper choice


def test_auto_picks_by_the_number_of_images_as_the_help_says():
    (largest, first), (unbounded, second) = AUTO_MAPPER_RULE
    assert unbounded is None and first != second
    assert pick_mapper("auto", 3) == first and pick_mapper("auto", largest) == first
    assert pick_mapper("auto", largest + 1) == second == pick_mapper("auto", 100_000)
    assert pick_mapper("hierarchical", 3) == "hierarchical"  # an explicit choice stays
    with pytest.raises(ValueError, match="hierarchical"):
        pick_mapper("glomap", 10)
    # the help states the rule the code applies
    assert AUTO_HELP == describe_auto_rule() and str(largest) in AUTO_HELP
    sfm_parser = build_parser()._subparsers._group_actions[0].choices["sfm"]
    assert " ".join(AUTO_HELP.split()) in " ".join(sfm_parser.format_help().split())


def test_hierarchical_options_take_incremental_keys():
    opts = _pipeline_options("hierarchical", {
        **MAP_OPTIONS, "mapper.init_min_num_inliers": 50,
        "clustering_options.leaf_max_num_images": 6})
    assert isinstance(opts, pycolmap.HierarchicalPipelineOptions)
    assert opts.num_threads == 2  # its own field
    assert opts.incremental_options.random_seed == 0  # IncrementalPipelineOptions' field
    assert opts.incremental_options.mapper.init_min_num_inliers == 50
    assert opts.clustering_options.leaf_max_num_images == 6
    assert set(MAPPERS) == {"incremental", "global", "hierarchical"}


def test_hierarchical_and_auto_map_a_synthetic_scene(tmp_path):
    names = [f"{i}.png" for i in range(8)]
    keypoints, matches, centres, _ = synthetic_scene(tmp_path / "images", names)
    db = tmp_path / "db.db"
    create_database(db, tmp_path / "images", names, keypoints, matches)
    verify(db)
    for mapper in ("hierarchical", "auto"):
        rec = reconstruct(db, tmp_path / "images", tmp_path / mapper, mapper=mapper,
                          options=MAP_OPTIONS, image_names=names[:7])
        assert model_summary(rec, names)["unregistered"] == [names[7]]  # image_names kept
        assert align_and_compare(rec, centres)["median_error_rel"] < 5e-3


# ---------------------------------------------------------------------------- verification


def test_plan_budget_is_conservative():
    opts = _two_view_options(None)  # min_num_inliers 15, min_inlier_ratio 0.1
    counts = {1: 14, 2: 15, 3: 22, 4: 60, 5: 149, 6: 151, 7: 5000}
    skipped, groups = plan_budget(counts, opts)
    assert skipped == [1]
    ratio_of = {p: r for r, ps in groups.items() for p in ps}
    assert set(ratio_of) == set(counts) - {1}
    for pair, ratio in ratio_of.items():
        # never below the given 0.1; above it only up to what a pair that verifies
        # (>= 15 inliers) must have
        assert ratio >= 0.1 and (ratio == 0.1 or ratio <= 15 / counts[pair])
    assert ratio_of[2] > 0.75 and ratio_of[3] > 0.5 and ratio_of[7] == 0.1
    assert len(groups) <= 12  # a handful of COLMAP calls, not one per pair


def test_budget_sends_no_pair_with_too_few_matches_to_ransac(tmp_path, monkeypatch):
    names = [f"{i}.png" for i in range(4)]
    keypoints, matches, _, _ = synthetic_scene(tmp_path / "images", names, num_points=300)
    few, some = (names[0], names[3]), (names[1], names[3])
    matches[few] = matches[few][:10]  # fewer than min_num_inliers (15)
    matches[some] = matches[some][:20]
    db = tmp_path / "db.db"
    create_database(db, tmp_path / "images", names, keypoints, matches)
    sent = []  # (pairs in the file, min_inlier_ratio) of every COLMAP call
    original = pycolmap.verify_matches

    def recording(db_path, pairs_path, options):
        listed = {tuple(line.split()) for line in Path(pairs_path).read_text().splitlines()}
        sent.append((listed, options.ransac.min_inlier_ratio))
        return original(db_path, pairs_path, options=options)

    monkeypatch.setattr(pycolmap, "verify_matches", recording)
    stats = verify(db, list(matches), budget=True)
    assert stats["pairs_too_few_matches"] == 1 and stats["pairs_verified"] == 6
    assert stats["pairs_with_inliers"] == 5 and stats["inlier_matches"] == 4 * 300 + 20
    assert not any(few in listed for listed, _ in sent)
    ratios = {pair: ratio for listed, ratio in sent for pair in listed}
    assert 0.5 < ratios[some] <= 15 / 20 and ratios[(names[0], names[1])] == 0.1
    ids = read_image_ids(db)
    with pycolmap.Database.open(str(db)) as database:
        geometry = database.read_two_view_geometry(ids[few[0]], ids[few[1]])
    assert geometry.config == pycolmap.TwoViewGeometryConfiguration.DEGENERATE
    assert len(geometry.inlier_matches) == 0
    # without the budget every pair goes to COLMAP with the given options, in one call
    sent.clear()
    shutil.copy(tmp_path / "db.db", tmp_path / "off.db")
    with pycolmap.Database.open(str(tmp_path / "off.db")) as database:
        database.clear_two_view_geometries()
    assert verify(tmp_path / "off.db", list(matches), budget=False)["pairs_with_inliers"] == 5
    assert len(sent) == 1 and few in sent[0][0] and sent[0][1] == 0.1


@pytest.mark.slow
def test_budget_keeps_the_inliers_of_real_pairs(fountain, tmp_path):
    """SIFT on fountain-P11, hloc's 20,000 trials: the budget changes no pair's verdict and
    each pair's inlier count by at most 2 % (RANSAC draws other samples). The 10 pairs of
    the first image, overlaps from large to small (measured on all 55 pairs too: the same)."""
    first, *others = fountain["names"]
    pairs = [(first, other) for other in others]
    inliers = {}
    for budget in (False, True):
        db = tmp_path / f"{budget}.db"
        shutil.copy(fountain["db"], db)
        with pycolmap.Database.open(str(db)) as database:
            database.clear_two_view_geometries()
        verify(db, pairs, budget=budget)
        with pycolmap.Database.open(str(db)) as database:
            ids, geometries = database.read_two_view_geometries()
        inliers[budget] = {int(p): len(g.inlier_matches) for p, g in zip(ids, geometries)}
    assert set(inliers[True]) == set(inliers[False]) and len(inliers[False]) >= 8
    for pair, count in inliers[False].items():
        assert abs(inliers[True][pair] - count) <= 0.02 * count, pair


@pytest.mark.slow
def test_hierarchical_mapper_on_fountain(fountain, tmp_path):
    """Two clusters of at most 7 images (4 shared), each mapped incrementally, merged."""
    options = {**MAP_OPTIONS, "clustering_options": {"leaf_max_num_images": 7,
                                                     "image_overlap": 4}}
    rec = reconstruct(fountain["db"], fountain["image_dir"], tmp_path / "hierarchical",
                      mapper="hierarchical", options=options)
    result = align_and_compare(rec, fountain["centres"], fountain["rotations"])
    assert rec.num_reg_images() == 11 and result["missing"] == []
    assert result["median_error_rel"] < 0.01 and result["max_error_rel"] < 0.02
    assert result["median_rotation_error_deg"] < 2.0
    assert np.isfinite(result["max_error"])
