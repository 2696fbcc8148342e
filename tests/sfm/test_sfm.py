"""COLMAP bridge: options, database import (resumable), verification, mapping, export,
summaries and ground-truth comparison.

Fast tests use a synthetic scene (exact projections of random 3D points into grey images,
so COLMAP reads real image files). The slow tests run the whole bridge on real photos with
keypoints and matches computed here with OpenCV SIFT + mutual ratio test (no dependency on
matchlab's extractors or stores): Strecha's fountain-P11 against its ground-truth cameras,
and hloc's Sacre Coeur sample.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import pycolmap  # noqa: E402

from matchlab.datasets.readers import strecha_cameras  # noqa: E402
from matchlab.errors import OutputConflictError  # noqa: E402
from matchlab.retrieval.pairs import exhaustive_pairs, write_pairs_file  # noqa: E402
from matchlab.sfm import (DatabaseError, OptionsError, ReconstructionError,  # noqa: E402
                          align_and_compare, apply_options, camera_centres, create_database,
                          export_model, model_summary, read_image_ids, read_model,
                          reconstruct, verify)

# COLMAP's defaults rather than hloc's 20000 trials: SIFT + ratio test leaves few outliers,
# and this keeps the real-image tests fast.
FAST_RANSAC = {"ransac": {"max_num_trials": 5000, "min_inlier_ratio": 0.25}}
MAP_OPTIONS = {"num_threads": 2, "random_seed": 0}


# ---------------------------------------------------------------------------- helpers

def look_at(centre: np.ndarray, target=np.zeros(3)) -> np.ndarray:
    """World-to-camera rotation of a camera at `centre` looking at `target` (y down)."""
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)
    x = x / np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def synthetic_scene(root: Path, names: list[str], num_points=300, size=(640, 480), focal=500.0,
                    noise=0.3, seed=0):
    """Cameras on an arc around random points in [-1, 1]^3, every point seen in every image.

    Writes grey PNGs of the right size under root (COLMAP reads sizes from the files).
    Returns keypoints (pixel-centre convention), exhaustive matches, GT centres and
    world-to-camera rotations.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    points = rng.uniform(-1, 1, (num_points, 3))
    keypoints, centres, rotations = {}, {}, {}
    for i, name in enumerate(names):
        angle = np.radians(-40 + 80 * i / max(1, len(names) - 1))
        centre = np.array([6 * np.sin(angle), 0.5 * np.cos(3 * angle), -6 * np.cos(angle)])
        rot = look_at(centre)
        cam = (points - centre) @ rot.T
        uv = focal * cam[:, :2] / cam[:, 2:] + [width / 2 - 0.5, height / 2 - 0.5]
        assert (uv > 0).all() and (uv < [width - 1, height - 1]).all()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))
        keypoints[name] = uv + rng.normal(0, noise, uv.shape)
        centres[name], rotations[name] = centre, rot
    matches = {p: np.stack([np.arange(num_points)] * 2, 1) for p in exhaustive_pairs(names)}
    return keypoints, matches, centres, rotations


def count_rows(db_path: Path) -> dict[str, int]:
    """Row counts through pycolmap. (Python's sqlite3 is a second SQLite library in the
    process; mixing it with pycolmap's on one file breaks POSIX locking.)"""
    with pycolmap.Database.open(str(db_path)) as db:
        ids = [im.image_id for im in db.read_all_images()]
        return {"cameras": db.num_cameras(), "images": db.num_images(),
                "keypoints": sum(db.exists_keypoints(i) for i in ids),
                "matches": db.num_matched_image_pairs(),
                "two_view_geometries": db.num_verified_image_pairs()}


def sift_features(image_dir: Path, names: list[str], long_side=1024, max_keypoints=4000):
    """RootSIFT on a downscaled copy; keypoints mapped back to ORIGINAL pixels."""
    sift = cv2.SIFT_create(nfeatures=max_keypoints)
    keypoints, descriptors = {}, {}
    for name in names:
        image = cv2.imread(str(image_dir / name), cv2.IMREAD_GRAYSCALE)
        height, width = image.shape
        scale = min(1.0, long_side / max(height, width))
        small = cv2.resize(image, (round(width * scale), round(height * scale)),
                           interpolation=cv2.INTER_AREA) if scale < 1 else image
        kps, desc = sift.detectAndCompute(small, None)
        xy = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
        # OpenCV puts pixel centres on integers, as matchlab does: x = (x' + .5) * s - .5
        factor = np.array([width / small.shape[1], height / small.shape[0]])
        keypoints[name] = (xy + 0.5) * factor - 0.5
        desc = desc / (desc.sum(1, keepdims=True) + 1e-7)
        descriptors[name] = np.sqrt(desc).astype(np.float32)  # RootSIFT: unit L2 norm
    return keypoints, descriptors


def mutual_ratio_matches(desc0: np.ndarray, desc1: np.ndarray, ratio=0.8) -> np.ndarray:
    """Mutual nearest neighbours passing Lowe's ratio test (unit-norm descriptors)."""
    sim = desc0 @ desc1.T
    rows = np.arange(len(desc0))
    best = sim.argmax(1)
    first = sim[rows, best].copy()
    sim[rows, best] = -np.inf
    second = sim.max(1)
    sim[rows, best] = first
    # squared distances of unit vectors: 2 - 2 cos
    candidates = rows[2 - 2 * first < ratio ** 2 * (2 - 2 * second)]
    # mutual check on the candidates' columns only (a full argmax(0) is slow)
    mutual = sim[:, best[candidates]].argmax(0) == candidates
    return np.stack([candidates[mutual], best[candidates[mutual]]], 1)


def sift_inputs(image_dir: Path, names: list[str], pairs):
    keypoints, descriptors = sift_features(image_dir, names)
    matches = {(a, b): mutual_ratio_matches(descriptors[a], descriptors[b]) for a, b in pairs}
    return keypoints, matches


# ---------------------------------------------------------------------------- options

def test_options_nested_dotted_flat_and_enums():
    opts = apply_options(pycolmap.IncrementalPipelineOptions(), {
        "mapper": {"abs_pose_min_num_inliers": 20},   # nested
        "triangulation.min_angle": 2.0,                # dotted
        "init_min_tri_angle": 8,                       # flat, only under mapper
        "num_threads": 3,                              # top level
        "image_selection_method": "max_visible_points_num",
    })
    assert opts.mapper.abs_pose_min_num_inliers == 20
    assert opts.triangulation.min_angle == 2.0
    assert opts.mapper.init_min_tri_angle == 8.0
    assert opts.num_threads == 3 and opts.mapper.num_threads == -1
    assert opts.mapper.image_selection_method.name == "MAX_VISIBLE_POINTS_NUM"
    two_view = apply_options(pycolmap.TwoViewGeometryOptions(), {"ransac": {"max_num_trials": 7}})
    assert two_view.ransac.max_num_trials == 7


@pytest.mark.parametrize("options, message", [
    ({"max_focal_length_ratiox": 1}, "did you mean max_focal_length_ratio"),
    ({"mapper.num_threads": 2}, "set 'num_threads' instead"),
    ({"abs_pose_refine_focal_length": False}, "set 'ba_refine_focal_length' instead"),
    ({"mapper": {"random_seed": 1}}, "set 'random_seed' instead"),
    ({"mapper": {"init_min_num_inliers": "many"}}, "expected a int"),
    ({"mapper": 3}, "give a dict"),
    ({"mapper.nope": 3}, "unknown option 'nope' in mapper"),
    ({"min_num_matches.x": 3}, "not a group"),
    ({"image_selection_method": "best"}, "not one of"),
])
def test_options_errors(options, message):
    with pytest.raises(OptionsError, match=message):
        apply_options(pycolmap.IncrementalPipelineOptions(), options)


def test_options_ambiguous_flat_key():
    # only triangulation has max_transitivity: the flat key is routed there
    opts = apply_options(pycolmap.IncrementalPipelineOptions(), {"max_transitivity": 2})
    assert opts.triangulation.max_transitivity == 2
    # GLOMAP's options have use_gpu in global_positioning and in bundle_adjustment.ceres
    with pytest.raises(OptionsError, match="ambiguous.*global_positioning.use_gpu"):
        apply_options(pycolmap.GlobalPipelineOptions(), {"use_gpu": False})
    opts = apply_options(pycolmap.GlobalPipelineOptions(),
                         {"mapper.global_positioning.use_gpu": False})
    assert opts.mapper.global_positioning.use_gpu is False


# ---------------------------------------------------------------------------- synthetic

@pytest.fixture()
def spaced_scene(tmp_path):
    """Names with spaces in a sub-folder; plus one image without any match."""
    names = [f"my photos/img {i}.png" for i in range(8)]
    keypoints, matches, centres, rotations = synthetic_scene(tmp_path / "images", names)
    lonely = "my photos/lonely one.png"
    cv2.imwrite(str(tmp_path / "images" / lonely), np.zeros((480, 640), np.uint8))
    keypoints[lonely] = np.random.default_rng(1).uniform(0, 400, (50, 2))
    return dict(root=tmp_path, image_dir=tmp_path / "images", names=names + [lonely],
                keypoints=keypoints, matches=matches, centres=centres, rotations=rotations)


def test_synthetic_pipeline_names_with_spaces(spaced_scene):
    s = spaced_scene
    db = s["root"] / "database.db"
    stats = create_database(db, s["image_dir"], s["names"], s["keypoints"], s["matches"],
                            camera_mode="single", camera_params=[500.0, 320.0, 240.0, 0.0])
    assert (stats["images_added"], stats["keypoints_added"], stats["matches_added"]) == (9, 9, 28)
    ids = read_image_ids(db)
    assert set(ids) == set(s["names"]) and stats["image_ids"] == ids
    with pycolmap.Database.open(str(db)) as database:
        name = s["names"][3]
        # COLMAP's pixel convention: matchlab keypoints + 0.5
        assert np.allclose(database.read_keypoints(ids[name]), s["keypoints"][name] + 0.5,
                           atol=1e-4)
        assert database.num_cameras() == 1
        camera = database.read_camera(1)
        assert camera.model.name == "SIMPLE_RADIAL" and camera.params[0] == 500.0

    # verify a subset given as a list: names have spaces, so COLMAP's pairs-file reader
    # cannot be used; only the requested pairs may end up verified
    subset = exhaustive_pairs(s["names"][:8])[:10]
    stats = verify(db, subset, options=FAST_RANSAC)
    assert stats["pairs_verified"] == 10 and stats["pairs_with_inliers"] == 10
    assert stats["inlier_matches"] == 10 * 300
    assert count_rows(db)["two_view_geometries"] == 10
    stats = verify(db, options=FAST_RANSAC)  # all matched pairs: the other 18
    assert (stats["pairs_requested"], stats["pairs_already_verified"],
            stats["pairs_verified"]) == (28, 10, 18)
    assert verify(db)["pairs_verified"] == 0  # resumable: nothing left to do

    out = s["root"] / "out"
    rec = reconstruct(db, s["image_dir"], out, options=MAP_OPTIONS)
    summary = model_summary(rec, s["names"])
    assert summary["num_reg_images"] == 8
    assert summary["unregistered"] == ["my photos/lonely one.png"]
    assert summary["num_points3D"] == 300 and summary["mean_track_length"] == pytest.approx(8)
    assert summary["mean_reprojection_error"] < 1.0
    assert set(camera_centres(rec)) == set(s["names"][:8])
    result = align_and_compare(rec, s["centres"], s["rotations"])
    assert result["num_compared"] == 8 and result["missing"] == []
    assert result["median_error_rel"] < 1e-3 and result["max_rotation_error_deg"] < 0.2

    # exports: binary (what COLMAP/hloc read), text, PLY
    assert {p.name for p in (out / "sparse").iterdir()} >= {"cameras.bin", "images.bin",
                                                             "points3D.bin"}
    assert (out / "sparse_text" / "images.txt").read_text().count("my photos/img") == 8
    again = read_model(out / "sparse")
    assert again.num_reg_images() == 8 and again.num_points3D() == rec.num_points3D()
    assert read_model(out / "sparse_text").num_points3D() == rec.num_points3D()
    header = (out / "points3D.ply").read_bytes()[:400].decode("ascii", "replace")
    assert f"element vertex {rec.num_points3D()}" in header
    assert not list(out.glob(".*tmp"))


def test_verify_with_pairs_file_and_global_mapper(tmp_path):
    names = [f"seq/{i:04d}.png" for i in range(6)]
    keypoints, matches, centres, _ = synthetic_scene(tmp_path / "images", names, seed=3)
    db = tmp_path / "db.db"
    create_database(db, tmp_path / "images", names, keypoints, matches, camera_mode="per_folder")
    pairs_file = write_pairs_file(tmp_path / "pairs.txt",
                                  [(b, a) for a, b in exhaustive_pairs(names)[:12]])
    stats = verify(db, pairs_file)  # space-free names: pycolmap.verify_matches on a file
    assert stats["pairs_verified"] == 12 and stats["pairs_with_inliers"] == 12
    assert count_rows(db)["two_view_geometries"] == 12
    assert verify(db, pairs_file)["pairs_already_verified"] == 12
    with pycolmap.Database.open(str(db)) as database:
        ids = read_image_ids(db)
        geometry = database.read_two_view_geometry(ids[names[0]], ids[names[1]])
        assert geometry.config != pycolmap.TwoViewGeometryConfiguration.UNDEFINED
    with pytest.raises(DatabaseError, match="not in the database"):
        verify(db, [(names[0], "other.png")])
    verify(db, options=FAST_RANSAC)
    rec = reconstruct(db, tmp_path / "images", tmp_path / "global", mapper="global",
                      options={"num_threads": 2, "random_seed": 0})
    assert rec.num_reg_images() == 6
    assert align_and_compare(rec, centres)["median_error_rel"] < 1e-3


@pytest.mark.parametrize("mapper", ["incremental", "global", "hierarchical"])
def test_known_intrinsics_are_held_fixed_by_the_mapper(tmp_path, mapper):
    """SfMConfig.camera_params: the given intrinsics reach the database and, with the
    mapper's `fixed_intrinsics` options (what run_sfm adds for them), every mapper leaves them
    as given even when they are 4 % off; without those options it refines the focal length
    back to 500."""
    from matchlab.sfm.reconstruction import MAPPERS

    names = [f"{i}.png" for i in range(5)]
    keypoints, matches, centres, _ = synthetic_scene(tmp_path / "images", names, num_points=120,
                                                     seed=5)
    db = tmp_path / "db.db"
    given = [520.0, 520.0, 319.5, 239.5]
    create_database(db, tmp_path / "images", names, keypoints, matches,
                    camera_model="PINHOLE", camera_mode="single", camera_params=given)
    verify(db, options=FAST_RANSAC)
    fixed = reconstruct(db, tmp_path / "images", tmp_path / "fixed", mapper=mapper,
                        options={**MAP_OPTIONS, **MAPPERS[mapper].fixed_intrinsics})
    refined = reconstruct(db, tmp_path / "images", tmp_path / "refined", mapper=mapper,
                          options=MAP_OPTIONS)
    assert fixed.num_reg_images() == refined.num_reg_images() == 5
    assert list(fixed.cameras[1].params) == given
    assert abs(refined.cameras[1].params[0] - 500.0) < 2.0
    assert align_and_compare(refined, centres)["median_error_rel"] < 1e-3


def test_create_database_rerun_does_not_duplicate(tmp_path):
    names = [f"{i}.png" for i in range(5)]
    keypoints, matches, _, _ = synthetic_scene(tmp_path / "images", names, num_points=60)
    db = tmp_path / "db.db"
    # first run: three images, "single" camera, their 3 pairs
    create_database(db, tmp_path / "images", names[:3], keypoints,
                    {p: m for p, m in matches.items() if set(p) <= set(names[:3])},
                    camera_mode="single")
    stats = create_database(db, tmp_path / "images", names, keypoints, matches,
                            camera_mode="single")
    assert (stats["images_added"], stats["images_existing"]) == (2, 3)
    assert (stats["keypoints_added"], stats["keypoints_existing"]) == (2, 3)
    assert stats["matches_existing"] == 3 and stats["matches_added"] == 7
    rows = count_rows(db)
    assert rows == {"cameras": 1, "images": 5, "keypoints": 5, "matches": 10,
                    "two_view_geometries": 0}
    # the same call again changes nothing, in either pair order
    flipped = {(b, a): m[:, ::-1] for (a, b), m in matches.items()}
    for again in (matches, flipped):
        stats = create_database(db, tmp_path / "images", names, keypoints, again,
                                camera_mode="single")
        assert stats["images_added"] == stats["keypoints_added"] == stats["matches_added"] == 0
        assert stats["matches_existing"] == 10
        assert count_rows(db) == rows
    verify(db, options=FAST_RANSAC)
    create_database(db, tmp_path / "images", names, keypoints, matches, camera_mode="single")
    assert count_rows(db)["two_view_geometries"] == 10 and count_rows(db)["images"] == 5


def test_create_database_rejects_stale_db_and_bad_inputs(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    keypoints, matches, _, _ = synthetic_scene(tmp_path / "images", names, num_points=40)
    image_dir, db = tmp_path / "images", tmp_path / "db.db"
    create_database(db, image_dir, names, keypoints, dict(list(matches.items())[:2]))
    before = count_rows(db)
    moved = {**keypoints, "b.png": keypoints["b.png"] + 2.0}
    with pytest.raises(DatabaseError, match="different keypoints for 'b.png'.*stale"):
        create_database(db, image_dir, names, moved, matches)
    changed = {**matches, ("a.png", "b.png"): matches[("a.png", "b.png")][:10]}
    with pytest.raises(DatabaseError, match="different matches"):
        create_database(db, image_dir, names, keypoints, changed)
    assert count_rows(db) == before  # checked before writing: the third pair was not added

    fresh = tmp_path / "fresh.db"
    bad_cases = [
        (names + ["missing.png"], keypoints, matches, "not found under"),
        (names, {"a.png": keypoints["a.png"]}, matches, "no keypoints given for image 'b.png'"),
        (names, {**keypoints, "a.png": np.zeros((3, 3))}, matches, r"must be \[N, 2\]"),
        (names, keypoints, {**matches, ("b.png", "a.png"): np.zeros((0, 2))}, "both"),
        (names, keypoints, {("a.png", "a.png"): np.zeros((0, 2))}, "self-pair"),
        (names, keypoints, {("a.png", "x.png"): np.zeros((0, 2))}, "not in the image list"),
        (names, keypoints, {("a.png", "b.png"): np.array([[0, 40]])}, "index past"),
        (names, keypoints, {("a.png", "b.png"): np.array([[-1, 0]])}, "negative"),
        (names, keypoints, {("a.png", "b.png"): np.array([[0.5, 1]])}, "integer"),
        (["a.png", "a.png"], keypoints, {}, "repeated"),
    ]
    for case_names, case_kps, case_matches, message in bad_cases:
        with pytest.raises(DatabaseError, match=message):
            create_database(fresh, image_dir, case_names, case_kps, case_matches)
    assert not fresh.exists()  # inputs are checked before anything is written
    with pytest.raises(DatabaseError, match="camera_mode"):
        create_database(fresh, image_dir, names, keypoints, matches, camera_mode="rig")
    with pytest.raises(DatabaseError, match="PINHOLE takes fx, fy, cx, cy, got 3 values"):
        create_database(fresh, image_dir, names, keypoints, matches, camera_model="PINHOLE",
                        camera_params=[500.0, 320.0, 240.0])
    assert not fresh.exists()
    unreadable = image_dir / "broken.png"
    unreadable.write_bytes(b"not an image")
    with pytest.raises(DatabaseError, match="could not import.*broken.png"):
        create_database(fresh, image_dir, names + ["broken.png"],
                        {**keypoints, "broken.png": np.zeros((0, 2))}, matches)


def test_reconstruct_errors(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    keypoints, matches, centres, _ = synthetic_scene(tmp_path / "images", names, num_points=40)
    db = tmp_path / "db.db"
    create_database(db, tmp_path / "images", names, keypoints, matches)
    with pytest.raises(ReconstructionError, match="run verify"):
        reconstruct(db, tmp_path / "images", tmp_path / "out")
    with pytest.raises(ValueError, match="mapper"):
        reconstruct(db, tmp_path / "images", tmp_path / "out", mapper="glomap")
    with pytest.raises(OptionsError):
        reconstruct(db, tmp_path / "images", tmp_path / "out",
                    options={"mapper": {"abs_pose_min_num_inlier": 20}})
    with pytest.raises(ReconstructionError, match="not found"):
        reconstruct(tmp_path / "none.db", tmp_path / "images", tmp_path / "out")


def test_align_and_compare_reports_missing_and_needs_three(tmp_path):
    names = [f"{i}.png" for i in range(5)]
    keypoints, matches, centres, rotations = synthetic_scene(tmp_path / "images", names)
    db = tmp_path / "db.db"
    create_database(db, tmp_path / "images", names, keypoints, matches, camera_mode="single")
    verify(db, options=FAST_RANSAC)
    rec = reconstruct(db, tmp_path / "images", tmp_path / "out", options=MAP_OPTIONS,
                      export=False)
    assert not (tmp_path / "out" / "sparse").exists()
    gt = {**centres, "never seen.png": np.array([100.0, 0.0, 0.0])}
    result = align_and_compare(rec, gt)
    assert result["missing"] == ["never seen.png"] and result["num_compared"] == 5
    assert result["extent"] > 90  # extent over all GT centres
    assert result["median_error"] < 0.01
    with pytest.raises(ReconstructionError, match="need 3"):
        align_and_compare(rec, {n: centres[n] for n in names[:2]})


# ---------------------------------------------------------------------------- real images

def sift_fountain(datasets_root, tmp_path_factory):
    """SIFT features, exhaustive matches, database and verification for fountain-P11 (the
    session fixture `fountain` of tests/sfm/conftest.py: made once for all modules)."""
    root = datasets_root / "strecha_fountain_P11"
    image_dir = root / "images"
    names = sorted(p.name for p in image_dir.glob("*.jpg"))
    assert len(names) == 11
    work = tmp_path_factory.mktemp("fountain")
    timings = {}
    start = time.perf_counter()
    pairs = exhaustive_pairs(names)
    keypoints, matches = sift_inputs(image_dir, names, pairs)
    timings["sift_and_matching"] = time.perf_counter() - start
    db = work / "database.db"
    start = time.perf_counter()
    # fountain-P11 is one camera; without EXIF COLMAP starts from f = 1.2 * 3072
    create_database(db, image_dir, names, keypoints, matches, camera_mode="single")
    pairs_path = write_pairs_file(work / "pairs.txt", pairs)
    stats = verify(db, pairs_path, options=FAST_RANSAC)
    timings["database_and_verification"] = time.perf_counter() - start
    assert stats["pairs_with_inliers"] >= 40
    cameras = strecha_cameras("strecha_fountain_P11")  # R camera-to-world: x ~ K R^T (X - C)
    centres = {n: cameras[n].C for n in names}
    rotations = {n: cameras[n].R.T for n in names}
    return dict(image_dir=image_dir, names=names, db=db, work=work, timings=timings,
                centres=centres, rotations=rotations, keypoints=keypoints, matches=matches)


@pytest.mark.slow
@pytest.mark.parametrize("mapper", ["incremental", "global"])
def test_fountain_against_ground_truth(fountain, mapper, record_property):
    start = time.perf_counter()
    rec = reconstruct(fountain["db"], fountain["image_dir"], fountain["work"] / mapper,
                      mapper=mapper, options=MAP_OPTIONS)
    elapsed = time.perf_counter() - start
    summary = model_summary(rec, fountain["names"])
    result = align_and_compare(rec, fountain["centres"], fountain["rotations"])
    numbers = {"mapper": mapper, "registered": summary["num_reg_images"],
               "points": summary["num_points3D"],
               "reproj_px": round(summary["mean_reprojection_error"], 3),
               "median_centre_err_m": round(result["median_error"], 4),
               "max_centre_err_m": round(result["max_error"], 4),
               "median_rel": round(result["median_error_rel"], 5),
               "max_rel": round(result["max_error_rel"], 5),
               "median_rot_deg": round(result["median_rotation_error_deg"], 3),
               "mapping_s": round(elapsed, 1),
               **{k: round(v, 1) for k, v in fountain["timings"].items()}}
    print(numbers)
    record_property("fountain", numbers)
    assert summary["num_reg_images"] == 11 and summary["unregistered"] == []
    assert result["median_error_rel"] < 0.01
    assert result["max_error_rel"] < 0.02
    assert result["median_rotation_error_deg"] < 2.0
    assert (fountain["work"] / mapper / "sparse" / "points3D.bin").is_file()


@pytest.mark.slow
def test_fountain_rerun_create_database_is_a_no_op(fountain):
    db_copy = fountain["work"] / "copy.db"
    shutil.copy(fountain["db"], db_copy)
    before = count_rows(db_copy)
    stats = create_database(db_copy, fountain["image_dir"], fountain["names"],
                            fountain["keypoints"], fountain["matches"], camera_mode="single")
    assert stats["images_existing"] == 11 and stats["matches_existing"] == 55
    assert stats["images_added"] == stats["keypoints_added"] == stats["matches_added"] == 0
    assert count_rows(db_copy) == before
    assert verify(db_copy, exhaustive_pairs(fountain["names"]))["pairs_verified"] == 0


@pytest.mark.slow
def test_sacre_coeur_registers_all(datasets_root, tmp_path, record_property):
    image_dir = datasets_root / "hloc_sacre_coeur" / "mapping"
    names = sorted(p.name for p in image_dir.glob("*.jpg"))
    assert len(names) == 10
    start = time.perf_counter()
    keypoints, matches = sift_inputs(image_dir, names, exhaustive_pairs(names))
    db = tmp_path / "database.db"
    create_database(db, image_dir, names, keypoints, matches)  # auto: sizes differ
    verify(db, options=FAST_RANSAC)
    # Ten Internet photos, each its own camera without EXIF focal, and SIFT: with COLMAP's
    # default PnP thresholds (30 inliers, ratio 0.25) one image stays out in ~3 of 4 runs.
    options = {**MAP_OPTIONS,
               "mapper": {"abs_pose_min_num_inliers": 15, "abs_pose_min_inlier_ratio": 0.1}}
    rec = reconstruct(db, image_dir, tmp_path / "out", options=options)
    elapsed = time.perf_counter() - start
    summary = model_summary(rec, names)
    numbers = {"registered": summary["num_reg_images"], "points": summary["num_points3D"],
               "reproj_px": round(summary["mean_reprojection_error"], 3),
               "track_length": round(summary["mean_track_length"], 2),
               "total_s": round(elapsed, 1)}
    print(numbers)
    record_property("sacre_coeur", numbers)
    assert summary["unregistered"] == [] and summary["num_reg_images"] == 10
    assert summary["mean_reprojection_error"] < 2.0


def verified_scene(root: Path, num_images: int, num_points: int) -> Path:
    """A verified database of a synthetic scene under root (images in root/images)."""
    names = [f"{i}.png" for i in range(num_images)]
    keypoints, matches, _, _ = synthetic_scene(root / "images", names, num_points=num_points)
    db = root / "db.db"
    create_database(db, root / "images", names, keypoints, matches)
    verify(db, options=FAST_RANSAC)
    return db


def test_reconstruct_never_deletes_files_it_did_not_write(tmp_path):
    db = verified_scene(tmp_path, 5, num_points=120)
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    notes = out / "models" / "my notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputConflictError, match=r"models holds 1 file\(s\) matchlab did not "
                                                  r"write \(models/my notes.txt\)"):
        reconstruct(db, tmp_path / "images", out, options=MAP_OPTIONS)
    assert notes.read_text() == "mine" and not (out / "sparse").exists()
    notes.rename(out / "my notes.txt")  # moved away: the run goes ahead
    rec = reconstruct(db, tmp_path / "images", out, options=MAP_OPTIONS)
    assert rec.num_reg_images() == 5
    first = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # a second run replaces what the first wrote (nothing else), and nothing is left over
    rec = reconstruct(db, tmp_path / "images", out, options=MAP_OPTIONS)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == first
    assert "my notes.txt" in first and "sparse/cameras.bin" in first
    (out / "sparse_text" / "keep.txt").write_text("mine too")
    with pytest.raises(OutputConflictError, match="sparse_text/keep.txt"):
        export_model(rec, out)
    assert (out / "sparse_text" / "keep.txt").is_file() and (out / "sparse_text").is_dir()
    assert (out / "sparse" / "cameras.bin").is_file()  # refused before anything was replaced


COLMAP_LOGS = r"""
import sys
import pycolmap
if sys.argv[1] == "plain":  # what COLMAP does left alone: log files in the temporary folder
    pycolmap.logging.warning("a message")
else:
    from matchlab.sfm import ReconstructionError, reconstruct
    try:  # a mapper failure: no initial pair has that many inliers
        reconstruct(sys.argv[2], sys.argv[3], sys.argv[4],
                    options={"init_min_num_inliers": 100000, "num_threads": 1})
    except ReconstructionError as e:
        print("failed:", e)
"""


@pytest.mark.slow  # two subprocesses importing pycolmap and matchlab
def test_failed_mapping_leaves_no_colmap_logs_in_tmp(tmp_path):
    import os
    import subprocess
    import sys

    db = verified_scene(tmp_path, 3, num_points=40)
    script = tmp_path / "script.py"
    script.write_text(COLMAP_LOGS)
    repo = Path(__file__).resolve().parents[2]
    for mode in ("plain", "matchlab"):
        temp = tmp_path / f"tmp_{mode}"
        temp.mkdir()
        env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(repo)}
        run = subprocess.run([sys.executable, str(script), mode, str(db),
                              str(tmp_path / "images"), str(tmp_path / "out")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        logs = sorted(p.name for p in temp.iterdir())
        if mode == "plain":
            assert logs and all(".log." in name for name in logs)  # the test can see them
        else:
            assert "failed: the incremental mapper produced no model" in run.stdout
            assert logs == [] and run.stderr  # the messages went to stderr only
