"""`matchlab sfm --extend SFM_DIR NEW_IMAGES` (matchlab.sfm.extend): new images added to a
model without redoing the old ones.

The slow test builds a SIFT + NN model (long side 640 px, one shared camera) of the first 6
images of Strecha's fountain-P11, extends it by the other 5 (plus a truncated JPEG), and
compares it with the full `run_sfm` of all 11 images on the same verified matches (the full
run reuses the extended folder's features.h5, matches.h5 and database.db, so only its
mapping is its own), both against the ground-truth cameras.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from matchlab.errors import ConfigError, UsageError
from matchlab.sfm.extend import PENDING, extension_pairs

FIRST, LAST = [f"{i:04d}.jpg" for i in range(6)], [f"{i:04d}.jpg" for i in range(6, 11)]
# Measured (SIFT + NN, 640 px): extended 11/11, camera-centre error median 5.1 mm, max
# 6.9 mm; the full run on the same verified matches 4.7 mm and 7.1 mm (the
# ground-truth camera extent is 14.8 m). Two mapper runs on the same matches differ by the
# order of registration and bundle adjustment, so the extended model may be somewhat less
# accurate: we allow twice the full run's median and max error. A wrongly registered image
# is centimetres to metres off.
ACCURACY_FACTOR = 2.0


def _fake_model(folder: Path, **config) -> Path:
    """A folder with the files `model_config` looks for and a summary.json with `config`."""
    folder.mkdir()
    for name in ("features.h5", "matches.h5", "database.db"):
        (folder / name).touch()
    (folder / "sparse").mkdir()
    base = {"features": "sift", "matcher": "nn", "pairs": "exhaustive", "resize": 640,
            "camera_mode": "single"}
    (folder / "summary.json").write_text(json.dumps({"config": {**base, **config}}))
    return folder


def test_extend_takes_the_models_options_and_refuses_others(tmp_path, capsys):
    from matchlab.cli import main

    model, new = _fake_model(tmp_path / "model"), tmp_path / "new"
    new.mkdir()
    for argv, message in ((["--features", "disk"], "--features 'sift'"),
                          (["--resize", "800"], "--resize 640"),
                          (["--camera-mode", "per_image"], "--camera-mode 'single'"),
                          (["--matcher-conf", "ratio_threshold=0.8"], "--matcher-conf"),
                          (["--mapper", "global"], "incremental mapper")):
        assert main(["sfm", "--extend", str(model), str(new), *argv]) == 1
        assert message in capsys.readouterr().err
    assert main(["sfm", "--extend", str(tmp_path / "new"), str(model)]) == 1
    assert "not a finished `matchlab sfm` output folder" in capsys.readouterr().err


def test_an_interrupted_extension_by_another_folder_is_refused(tmp_path):
    from matchlab.sfm.extend import extend_sfm

    model, new = _fake_model(tmp_path / "model"), tmp_path / "new"
    new.mkdir()
    (model / PENDING).write_text(json.dumps({"image_dir": str(tmp_path / "other"),
                                             "images": ["a.jpg"], "base": "sparse"}))
    with pytest.raises(UsageError, match="was interrupted; finish it first"):
        extend_sfm(model, new, log=lambda _: None)
    with pytest.raises(ConfigError, match="--features"):
        extend_sfm(model, new, given={"features": "aliked"}, log=lambda _: None)


def test_extension_pairs_involve_a_new_image(tmp_path):
    old, new = ["a", "b", "c"], ["d", "e"]
    where = dict(sfm_dir=tmp_path, new_dir=tmp_path, old_dir=None)
    assert extension_pairs("exhaustive", old, new, **where) == [
        ("d", "a"), ("d", "b"), ("d", "c"), ("d", "e"), ("e", "a"), ("e", "b"), ("e", "c")]
    assert extension_pairs("sequential:1", old, new, **where) == [("c", "d"), ("d", "e")]
    (tmp_path / "pairs.txt").write_text("a b\na d\nd e\nx y\nb e\n")
    assert extension_pairs(f"file:{tmp_path / 'pairs.txt'}", old, new, **where) == [
        ("a", "d"), ("d", "e"), ("b", "e")]


def test_database_takes_new_images_from_another_folder_and_pairs_in_either_order(tmp_path):
    import cv2

    from matchlab.errors import DatabaseError
    from matchlab.sfm import create_database

    first, second, db = tmp_path / "first", tmp_path / "second", tmp_path / "db.db"
    for folder, name in ((first, "a.png"), (second, "b.png")):
        folder.mkdir()
        cv2.imwrite(str(folder / name), np.zeros((48, 64), np.uint8))
    rng = np.random.default_rng(0)
    keypoints = {n: rng.uniform(0, 40, (30, 2)) for n in ("a.png", "b.png")}
    create_database(db, first, ["a.png"], keypoints, {})
    with pytest.raises(DatabaseError, match="not found under"):  # b.png is not in first/
        create_database(db, first, ["a.png", "b.png"], keypoints, {})
    m = np.stack([rng.permutation(30)[:20], rng.permutation(30)[:20]], 1)
    stats = create_database(db, second, ["a.png", "b.png"], keypoints, {("b.png", "a.png"): m})
    assert stats["images_added"] == 1 and stats["matches_added"] == 1
    # the same matches read as (a, b): other row order, same set of index pairs
    again = create_database(db, second, ["b.png", "a.png"], keypoints,
                            {("a.png", "b.png"): m[::-1, ::-1]})
    assert again["matches_existing"] == 1
    changed = m[:, ::-1].copy()
    changed[0, 0] = (changed[0, 0] + 1) % 30
    with pytest.raises(DatabaseError, match="different matches"):
        create_database(db, second, ["a.png", "b.png"], keypoints, {("a.png", "b.png"): changed})


# ---------------------------------------------------------------------------- slow: fountain

def _digests(path: Path, names) -> dict[str, tuple]:
    """{HDF5 item: (byte offset in the file of each dataset, sha1 of its values)}: an item
    rewritten, even with equal values, moves or changes."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and any(n in name for n in names):
                out[name] = (obj.id.get_offset(), hashlib.sha1(obj[()].tobytes()).hexdigest())
        f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def fountain(tmp_path_factory, datasets_root):
    from matchlab.evaluation.localization import _link_images
    from matchlab.pipeline import SfMConfig, run_sfm
    from matchlab.sfm.extend import extend_sfm

    root = tmp_path_factory.mktemp("extend")
    images = datasets_root / "strecha_fountain_P11" / "images"
    config = SfMConfig(features="sift", matcher="nn", resize=640, camera_mode="single")
    model = root / "model"
    run_sfm(_link_images(images, FIRST, root / "first"), model, config, progress=False,
            log=lambda _: None, report=False)
    base = root / "base"
    shutil.copytree(model, base)
    new = _link_images(images, LAST, root / "last")
    (new / "broken.jpg").write_bytes((images / "0007.jpg").read_bytes()[:5000])
    old_items = {"features": _digests(model / "features.h5", FIRST),
                 "matches": _digests(model / "matches.h5", FIRST)}
    summary = extend_sfm(model, new, progress=False, log=lambda _: None)
    full = root / "full"
    full.mkdir()
    for name in ("features.h5", "matches.h5", "database.db"):  # the same verified matches
        shutil.copy(model / name, full / name)
    full_summary = run_sfm(images, full, config, progress=False, log=lambda _: None,
                           report=False)
    return dict(model=model, base=base, new=new, full=full, summary=summary,
                full_summary=full_summary, old_items=old_items)


@pytest.mark.slow
def test_extended_model_registers_all_within_the_full_runs_accuracy(fountain):
    from matchlab.datasets.readers import strecha_cameras
    from matchlab.sfm import align_and_compare, read_model

    summary = fountain["summary"]
    assert summary["num_reg_images"] == 11 and summary["unregistered"] == []
    extension = summary["extensions"][-1]
    assert extension["registered"] == LAST and extension["old_images_lost"] == []
    assert "truncated" in extension["skipped"]["broken.jpg"]  # a bad image: skipped, named
    assert "broken.jpg" in summary["skipped"]
    assert fountain["full_summary"]["num_reg_images"] == 11
    cameras = strecha_cameras()
    centres = {n: c.C for n, c in cameras.items()}
    extended = align_and_compare(read_model(fountain["model"] / "sparse"), centres)
    full = align_and_compare(read_model(fountain["full"] / "sparse"), centres)
    print({"extended": (extended["median_error"], extended["max_error"]),
           "full": (full["median_error"], full["max_error"])})
    assert extended["median_error"] <= ACCURACY_FACTOR * full["median_error"], (extended, full)
    assert extended["max_error"] <= ACCURACY_FACTOR * full["max_error"], (extended, full)


@pytest.mark.slow
def test_old_images_are_kept_not_redone(fountain):
    from matchlab.sfm import read_model

    model, base = fountain["model"], fountain["base"]
    stages = {s["stage"]: s for s in fountain["summary"]["extensions"][-1]["stages"]}
    assert stages["extract"]["done"] == 5 and stages["extract"]["already"] == 0
    assert stages["match"]["done"] == 5 * 6 + 10 and stages["match"]["already"] == 0
    # the old images' features and the old pairs' matches were neither rewritten nor moved
    assert _digests(model / "features.h5", FIRST) == fountain["old_items"]["features"]
    old_matches = _digests(model / "matches.h5", FIRST)
    assert {k: v for k, v in old_matches.items() if k in fountain["old_items"]["matches"]} \
        == fountain["old_items"]["matches"]
    # the mapper continued the old model (same image ids), the old one is kept
    before, after = read_model(base / "sparse"), read_model(model / "sparse")
    ids = {im.name: im.image_id for im in before.images.values()}
    assert all(after.images[i].name == n for n, i in ids.items())
    # refined, not rebuilt, and back in the old frame: measured, the old centres moved by at
    # most 0.05 % of their extent (bundle adjustment with the new images); allow 0.5 %
    centres = np.stack([before.images[i].projection_center() for i in ids.values()])
    extent = np.linalg.norm(centres[:, None] - centres[None], axis=-1).max()
    moved = [np.linalg.norm(before.images[i].projection_center()
                            - after.images[i].projection_center()) for i in ids.values()]
    assert max(moved) < 0.005 * extent, (moved, extent)
    assert np.isclose(fountain["summary"]["extensions"][-1]["old_centres_moved"], max(moved))
    kept = read_model(model / "sparse_before_extend")
    assert kept.num_reg_images() == 6 and kept.num_points3D() == before.num_points3D()
    assert not (model / PENDING).exists()
    # names already in the model are skipped: a second run adds nothing
    from matchlab.sfm.extend import extend_sfm

    lines = []
    again = extend_sfm(model, fountain["new"], progress=False, log=lines.append)
    assert again["num_reg_images"] == 11 and "skipped 0006.jpg: already in the model" in lines
    assert np.isclose(again["mean_reprojection_error"],
                      fountain["summary"]["mean_reprojection_error"])


@pytest.mark.slow
def test_a_run_killed_while_swapping_models_resumes_from_the_kept_model(fountain, tmp_path):
    from matchlab.sfm.extend import BACKUP, extend_sfm

    model = tmp_path / "model"
    shutil.copytree(fountain["model"], model)
    # as a kill leaves it after the old model was kept and while sparse/ was being replaced
    (model / PENDING).write_text(json.dumps({"image_dir": str(fountain["new"].resolve()),
                                             "images": LAST, "base": BACKUP}))
    shutil.rmtree(model / "sparse")
    summary = json.loads((fountain["base"] / "summary.json").read_text())
    (model / "summary.json").write_text(json.dumps(summary))
    resumed = extend_sfm(model, fountain["new"], progress=False, log=lambda _: None,
                         report=False)
    assert resumed["num_reg_images"] == 11 and not (model / PENDING).exists()
    stages = {s["stage"]: s for s in resumed["extensions"][-1]["stages"]}
    assert stages["extract"]["done"] == 0 and stages["extract"]["already"] == 5
    assert stages["match"]["done"] == 0 and stages["match"]["already"] == 40
    assert read_model_images(model / BACKUP) == FIRST  # still the model before the extension


def read_model_images(path: Path) -> list[str]:
    from matchlab.sfm import read_model

    rec = read_model(path)
    return sorted(rec.images[i].name for i in rec.reg_image_ids())
