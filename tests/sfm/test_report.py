"""The summary formatter and report.html of `matchlab sfm` (matchlab.sfm.report), on a
summary as `run_sfm` writes it; the end-to-end page is checked in tests/test_pipeline.py."""
from __future__ import annotations

from matchlab.sfm.report import format_summary, summary_rows, write_report

SUMMARY = {
    "num_reg_images": 9, "num_input_images": 11, "num_points3D": 2447,
    "mean_track_length": 3.14159, "mean_reprojection_error": 0.76543,
    "unregistered": ["far.jpg", "<b>odd</b>.jpg"],
    "dropped": {"far.jpg": "registered on only 12 3D points"},
    "skipped": {"broken.jpg": "not an image"},
    "config": {"features": "sift", "matcher": "nn", "matcher_conf": {}},
    "stages": [{"stage": "extract", "done": 10, "already": 1, "failed": {"broken.jpg": "x"},
                "seconds": 2.25}],
}


def test_summary_rows_give_every_statistic_and_every_image_left_out():
    rows = dict(summary_rows(SUMMARY))
    assert rows["registered images"] == "9 / 11"
    assert rows["3D points"] == "2447"
    assert rows["mean track length"] == "3.14"
    assert rows["mean reprojection error"] == "0.765 px"
    assert rows["not registered"] == ("far.jpg (dropped: registered on only 12 3D points), "
                                      "<b>odd</b>.jpg")
    assert rows["skipped"] == "broken.jpg (not an image)"
    clean = {**SUMMARY, "unregistered": [], "dropped": {}, "skipped": {}}
    rows = dict(summary_rows(clean))
    assert rows["not registered"] == "-" == rows["skipped"]


def test_text_summary_aligns_the_rows():
    lines = format_summary(SUMMARY).splitlines()
    assert len(lines) == len(summary_rows(SUMMARY))
    assert lines[0] == "  registered images        9 / 11"
    assert len({line.index(value) for line, (_, value) in zip(lines, summary_rows(SUMMARY))}) == 1


def test_html_report_shows_the_same_rows_escaped(tmp_path):
    plots = [tmp_path / "plots" / "matches_00_a__b.png"]
    path = write_report(tmp_path, SUMMARY, plots, tmp_path / "plots" / "top_view.png")
    assert path == tmp_path / "report.html"
    page = path.read_text()
    assert "<b>odd</b>" not in page and "&lt;b&gt;odd&lt;/b&gt;.jpg" in page
    for label, value in summary_rows({**SUMMARY, "unregistered": ["far.jpg"]}):
        assert f"<th>{label}</th>" in page
    assert "9 / 11" in page and "broken.jpg (not an image)" in page
    assert "<td>extract</td><td>10</td><td>1</td><td>1</td><td>2.2</td>" in page
    assert "src='plots/matches_00_a__b.png'" in page and "src='plots/top_view.png'" in page
    assert "features=sift" in page and "matcher_conf" not in page
