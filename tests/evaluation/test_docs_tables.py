"""The documentation's measured tables are what `matchlab.evaluation.tables` makes from the
committed eval JSON in docs/results/: regenerate them and compare, so they cannot drift."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from matchlab.evaluation.tables import (DOC_TABLES, _BLOCK, format_table, load_runs, main,
                                        save_runs, update_blocks)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
PAGES = [ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "docs" / "affineglue.md"]


@pytest.fixture(scope="module")
def runs():
    return load_runs(RESULTS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_committed_tables_equal_the_generated_ones(page, runs):
    text = page.read_text()
    assert _BLOCK.search(text), f"{page} has no generated table"
    assert update_blocks(text, runs) == text, (
        f"{page} differs from docs/results/; run the command at the top of docs/results.md")


def test_every_documentation_table_is_used_and_filled(runs):
    text = "".join(page.read_text() for page in PAGES)
    used = [m.group(2) for m in _BLOCK.finditer(text)]
    assert sorted(set(used)) == sorted(DOC_TABLES)
    assert all(m.group(3).count("\n") >= 3 for m in _BLOCK.finditer(text)
               if m.group(2) in ("headline", "homography", "pose", "reconstruction"))


def test_a_changed_number_changes_the_page(runs):
    """The comparison above can fail: a different AUC in the JSON gives a different page."""
    text = (ROOT / "docs" / "results.md").read_text()
    changed = copy.deepcopy(dict(runs))
    pose = next(r for r in changed["all_disk_lightglue"] if r["benchmark"] == "pose")
    pose["estimators"]["lo-ransac"]["auc@5deg"] += 1.0
    assert update_blocks(text, changed) != text


def test_runs_load_from_eval_output_folders_and_save_without_per_pair_rows(tmp_path, capsys):
    result = {"benchmark": "homography", "dataset": "oxford_graf", "estimator": "ransac",
              "method": "sift+nn", "precision@3px": 0.5, "auc@1px": 0.1, "auc@3px": 0.2,
              "auc@5px": 0.3, "matches": 100.0, "time_match_s": 0.01,
              "pairs": [{"pair": "img1 -> img2", "matches": 100}]}
    (tmp_path / "eval" / "run_a").mkdir(parents=True)
    path = tmp_path / "eval" / "run_a" / "eval_homography_sift_nn.json"
    path.write_text(json.dumps([result]))
    runs = load_runs(tmp_path / "eval")
    assert list(runs) == ["run_a"] and "pairs" not in runs["run_a"][0]
    save_runs(runs, tmp_path / "saved")
    assert load_runs(tmp_path / "saved") == runs
    assert main([str(tmp_path / "eval"), "--save", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "run_a.json").read_text()) == runs["run_a"]
    table = format_table(runs["run_a"], markdown=True)
    assert "| sift+nn | oxford_graf | ransac | 50.0 | 10.00 | 20.00 | 30.00 | 100 | 0.010 |" in table


def test_check_reports_a_stale_page(tmp_path, runs):
    page = tmp_path / "page.md"
    page.write_text("<!-- table: reconstruction -->\nold\n<!-- end table -->\n")
    assert main([str(RESULTS), "--update", str(page), "--check"]) == 1
    assert "old" in page.read_text()
    assert main([str(RESULTS), "--update", str(page)]) == 0
    assert main([str(RESULTS), "--update", str(page), "--check"]) == 0
    assert "strecha_fountain_P11" in page.read_text()
