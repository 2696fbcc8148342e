"""Dataset registry, verified fetching (mirror in place / cache / URL) and ground-truth readers,
checked on the real sample datasets."""
from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
import threading

import cv2
import numpy as np
import pytest

from matchlab import datasets as D
from matchlab.datasets import build_manifest as B
from matchlab.datasets import registry as R
from matchlab.datasets import resolve as S
from matchlab.weights import sha256_of

UNREACHABLE = "http://127.0.0.1:9/"  # refused at once, offline or not
HALF = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])  # full -> half-size pixels
STRECHA_K = np.array([[2759.48, 0, 1520.69], [0, 2764.16, 1006.81], [0, 0, 1]])


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(S.CACHE_ENV, str(cache))
    return cache


def _with_url_base(monkeypatch, name: str, url_base: str) -> R.DatasetSpec:
    spec = dataclasses.replace(R.DATASETS[name], url_base=url_base)
    monkeypatch.setitem(R.DATASETS, name, spec)
    return spec


def _files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --- registry and manifest ---------------------------------------------------------------

def test_registry_covers_every_mirror_dataset(datasets_root):
    specs = D.list_datasets()
    assert [s.name for s in specs] == sorted(p.name for p in datasets_root.iterdir() if p.is_dir())
    assert 150 < sum(len(s.files) for s in specs) < 300
    assert 90e6 < sum(s.size for s in specs) < 110e6
    for spec in specs:
        assert spec.description and spec.license and spec.ground_truth and spec.files
        assert not any(f.path == "SOURCE.md" for f in spec.files)
        # the pinned repository and commit are the ones the mirror's notes name
        owner_repo, commit = spec.url_base.split("/")[3:5], spec.url_base.split("/")[5]
        notes = (datasets_root / spec.name / "SOURCE.md").read_text()
        assert "/".join(owner_repo) in notes and commit in notes and len(commit) == 40
        assert spec.source_url.startswith(f"https://github.com/{'/'.join(owner_repo)}/tree/{commit}/")


def test_manifest_matches_mirror(datasets_root):
    for spec in D.list_datasets():
        folder = datasets_root / spec.name
        assert [f.path for f in spec.files] == [p for p in _files_under(folder) if p != "SOURCE.md"]
        for f in spec.files:
            assert (folder / f.path).stat().st_size == f.size, f.path
        for f in (spec.files[0], spec.files[-1]):
            assert sha256_of(folder / f.path) == f.sha256, f.path
    # the generator reproduces the committed entries
    assert B.scan_dataset(datasets_root / "vpr_toy_gmberton") == list(R.DATASETS["vpr_toy_gmberton"].files)


def test_build_manifest_writes_loadable_json(datasets_root, tmp_path, monkeypatch):
    small = [s for s in R._SPECS if s.name in ("oxford_graf", "lightglue_assets")]
    monkeypatch.setattr(B, "_SPECS", small)
    out = tmp_path / "manifest.json"
    listed = B.build_manifest(datasets_root, out)
    loaded = R._load(out)
    assert loaded["oxford_graf"].files == tuple(listed["oxford_graf"])
    assert loaded["oxford_graf"].files == R.DATASETS["oxford_graf"].files
    assert loaded["evd"].files == ()  # not scanned here
    assert len(out.read_text().splitlines()) == 2 + 2 * 2 + 12 + 5 + 2


def test_file_urls_follow_upstream_layout():
    def url(name, path):
        return R.DATASETS[name].file_url(path)

    raw = "https://raw.githubusercontent.com/"
    assert url("evd", "h/adam.txt") == raw + ("Vincentqyw/image-matching-webui/aa4a6d0c7cdc9533f79dae1060d87b"
                                              "13e3b6e84f/imcui/datasets/wxbs_benchmark/.EVD/EVD/h/adam.txt")
    sg = raw + "magicleap/SuperGluePretrainedNetwork/ddcf11f42e7e0732a0c4607648f9448ea8d73590/"
    assert url("superglue_scannet_sample", "images/scene0711_00_frame-001680.jpg") == \
        sg + "assets/scannet_sample_images/scene0711_00_frame-001680.jpg"
    assert url("superglue_scannet_sample", "scannet_sample_pairs_with_gt.txt") == \
        sg + "assets/scannet_sample_pairs_with_gt.txt"
    assert url("superglue_phototourism_sample", "phototourism_sample_pairs.txt") == \
        sg + "assets/phototourism_sample_pairs.txt"
    assert url("superglue_freiburg_sequence", "_repo_license/LICENSE") == sg + "LICENSE"
    mvg = raw + "openMVG/SfM_quality_evaluation/348a981ef51112e9848acfb20004f4ed6fbc6ce3/"
    assert url("strecha_fountain_P11", "Readme.txt") == mvg + "Readme.txt"
    assert url("strecha_fountain_P11", "gt_dense_cameras/0003.jpg.camera") == \
        mvg + "Benchmarking_Camera_Calibration_2008/fountain-P11/gt_dense_cameras/0003.jpg.camera"
    for spec in D.list_datasets():
        urls = [spec.file_url(f.path) for f in spec.files]
        assert all(u and u.startswith(spec.url_base) for u in urls) and len(set(urls)) == len(urls)


def test_unknown_dataset_names_the_registered_ones():
    with pytest.raises(D.DatasetError, match="oxford_graf"):
        D.dataset_path("no_such_dataset")


# --- resolving: mirror in place, cache, URL ----------------------------------------------

def test_verified_mirror_is_used_in_place(datasets_root, empty_cache):
    for spec in D.list_datasets():
        assert D.dataset_path(spec.name) == datasets_root / spec.name
    assert not empty_cache.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_mirror_file_is_rejected_with_every_source_named(damage, datasets_root, tmp_path,
                                                                  empty_cache, monkeypatch):
    name, bad = "vpr_toy_gmberton", "database/db3.jpg"
    mirror = tmp_path / "mirror"
    shutil.copytree(datasets_root / name, mirror / name)
    data = bytearray((mirror / name / bad).read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF  # same size: only the sha256 tells
    else:
        data = data[:-100]
    (mirror / name / bad).write_bytes(bytes(data))
    monkeypatch.setenv(S.MIRROR_ENV, str(mirror))
    _with_url_base(monkeypatch, name, UNREACHABLE)

    with pytest.raises(D.DatasetError) as info:
        D.dataset_path(name)
    message = str(info.value)
    assert f"{bad} of dataset {name}" in message
    assert "mirror" in message and str(mirror / name / bad) in message
    size = next(f.size for f in R.DATASETS[name].files if f.path == bad)
    expected = "sha256 mismatch" if damage == "flip" else f"size {size - 100} bytes, want {size}"
    assert expected in message
    assert "url" in message and UNREACHABLE + "toy_dataset/" + bad in message
    cached = empty_cache / name
    assert not (cached / bad).exists() and not list(cached.rglob("*.tmp"))
    # the files before the bad one were verified and kept: a later fetch resumes
    assert (cached / "database/db1.jpg").is_file()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_from_url_fills_the_cache_and_is_not_repeated(datasets_root, tmp_path, empty_cache,
                                                            monkeypatch):
    name = "superglue_phototourism_sample"
    spec = R.DATASETS[name]
    served = tmp_path / "served"  # the upstream repository's layout, built from the mirror
    for f in spec.files:
        target = served / spec.remote_path(f.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(datasets_root / name / f.path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _with_url_base(monkeypatch, name, f"http://127.0.0.1:{server.server_address[1]}/")
        monkeypatch.delenv(S.MIRROR_ENV, raising=False)
        assert D.dataset_path(name) == empty_cache / name
        assert _files_under(empty_cache / name) == [f.path for f in spec.files]
        assert all(sha256_of(empty_cache / name / f.path) == f.sha256 for f in spec.files)

        # a corrupt cached file is replaced; the intact ones are not fetched again
        victim = empty_cache / name / "phototourism_sample_pairs.txt"
        victim.write_text(victim.read_text().replace("london", "paris"))
        fetched = []
        monkeypatch.setattr(S, "SOURCES", [(label, lambda spec, file, target, label=label, fn=fn: (
            fetched.append((label, file.path)), fn(spec, file, target))) for label, fn in S.SOURCES])
        assert D.fetch(name) == empty_cache / name
        assert fetched == [("mirror", victim.name), ("url", victim.name)]  # no mirror set here
        assert sha256_of(victim) == next(f.sha256 for f in spec.files if f.path == victim.name)

        # a download that does not verify is rejected and leaves nothing behind
        upstream = served / spec.remote_path(victim.name)
        upstream.unlink()
        upstream.write_text("not the pairs file")
        victim.unlink()
        with pytest.raises(D.DatasetError, match=r"url: http://127\.0\.0\.1:\d+/assets/"
                                                 r"phototourism_sample_pairs\.txt: size 18 bytes"):
            D.fetch(name)
        assert not victim.exists() and not list((empty_cache / name).glob(".*"))
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_copies_a_verified_mirror_into_the_cache(datasets_root, empty_cache, monkeypatch):
    _with_url_base(monkeypatch, "oxford_graf", UNREACHABLE)
    path = D.fetch("oxford_graf")
    assert path == empty_cache / "oxford_graf"
    assert _files_under(path) == [f.path for f in R.DATASETS["oxford_graf"].files]


# --- homographies ------------------------------------------------------------------------

def test_graf_homography_maps_corners_plausibly(datasets_root):
    H = D.read_homography(datasets_root / "oxford_graf" / "H1to2p")
    assert H.shape == (3, 3) and H.dtype == np.float64 and H[2, 2] == 1
    w, h = 800, 640
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    mapped = cv2.perspectiveTransform(corners[None], H)[0]
    assert np.all(mapped > -0.3 * np.array([w, h])) and np.all(mapped < 1.3 * np.array([w, h]))
    area = cv2.contourArea(mapped.astype(np.float32)) / cv2.contourArea(corners.astype(np.float32))
    assert 0.5 < area < 2
    assert np.abs(mapped - corners).max() > 20  # a real viewpoint change, not the identity
    back = cv2.perspectiveTransform(mapped[None], np.linalg.inv(H))[0]
    assert np.allclose(back, corners, atol=1e-6)
    assert np.abs(np.linalg.inv(H) / np.linalg.inv(H)[2, 2] - np.eye(3)).max() > 0.1


def _band_ncc(img0: np.ndarray, img1: np.ndarray, H: np.ndarray) -> float:
    """NCC between img1 and img0 warped by H, on band-passed (DoG 2/8 px) pixels of the overlap.

    The band-pass removes the low frequencies (shading, sky) that make plain NCC favour a
    wrong alignment on some EVD pairs."""
    h, w = img1.shape
    warped = cv2.warpPerspective(img0, H, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full(img0.shape, 255, np.uint8), H, (w, h),
                                 flags=cv2.INTER_NEAREST)
    mask = cv2.erode(inside, np.ones((9, 9), np.uint8)) > 0
    if mask.sum() < 1000:
        return 0.0

    def band(img):
        f = img.astype(np.float32)
        return (cv2.GaussianBlur(f, (0, 0), 2) - cv2.GaussianBlur(f, (0, 0), 8))[mask]

    a, b = band(warped), band(img1)
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


@pytest.mark.parametrize("name,count", [("oxford_graf", 5), ("evd", 15)])
def test_homographies_align_the_real_pixels(name, count):
    pairs = D.homography_pairs(name)
    assert len(pairs) == count
    for pair in pairs:
        img0, img1 = (cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), None, fx=0.5, fy=0.5,
                                 interpolation=cv2.INTER_AREA) for p in (pair.image0, pair.image1))
        H = HALF @ pair.H @ np.linalg.inv(HALF)  # the same homography at half resolution
        gt = _band_ncc(img0, img1, H)
        wrong = max(_band_ncc(img0, img1, M) for M in (np.eye(3), np.linalg.inv(H), H.T))
        # measured: GT 0.22 .. 0.92; identity / inverse / transpose <= 0.14, 0.16 below GT at least
        assert gt > 0.15 and gt > wrong + 0.1, (pair.image1, gt, wrong)


def test_homography_reader_rejects_bad_files(tmp_path):
    (tmp_path / "H").write_text("1 0 0\n0 1 0\n0 0\n")
    with pytest.raises(ValueError, match="expected 9 numbers"):
        D.read_homography(tmp_path / "H")
    with pytest.raises(ValueError, match="no homography ground truth"):
        D.homography_pairs("lightglue_assets")


# --- Strecha cameras ---------------------------------------------------------------------

def test_strecha_cameras(datasets_root):
    cameras = D.strecha_cameras()
    assert list(cameras) == [f"{i:04d}.jpg" for i in range(11)]
    K_txt = np.loadtxt(datasets_root / "strecha_fountain_P11" / "images" / "K.txt")
    for cam in cameras.values():
        assert np.allclose(cam.K, STRECHA_K) and np.allclose(cam.K, K_txt)
        assert np.allclose(cam.R.T @ cam.R, np.eye(3), atol=1e-5)
        assert np.isclose(np.linalg.det(cam.R), 1, atol=1e-5)
        assert (cam.width, cam.height) == (3072, 2048)
        R_cw, t = cam.world_to_camera()
        assert np.allclose(R_cw @ cam.C + t, 0)  # the centre is the origin of its camera
        assert np.allclose(D.relative_pose(cam, cam), np.eye(4), atol=1e-4)  # R has 6 digits
    a, b = cameras["0003.jpg"], cameras["0004.jpg"]
    assert np.allclose(D.relative_pose(a, b) @ D.relative_pose(b, a), np.eye(4), atol=1e-4)
    assert 0.5 < np.linalg.norm(a.C - b.C) < 5  # neighbouring shots, metres apart
    pairs = D.pose_pairs("strecha_fountain_P11")
    assert len(pairs) == 55 and (pairs[0].name0, pairs[0].name1) == ("0000.jpg", "0001.jpg")


def _epipolar_distances(p0, p1, K0, K1, T):
    """Distance (px) of each p1 to the epipolar line of p0 under T_0to1."""
    t = T[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K1).T @ tx @ T[:3, :3] @ np.linalg.inv(K0)
    lines = np.c_[p0, np.ones(len(p0))] @ F.T
    return np.abs((lines * np.c_[p1, np.ones(len(p1))]).sum(1)) / np.hypot(lines[:, 0], lines[:, 1])


def test_strecha_ground_truth_agrees_with_sift_matches():
    """SIFT at half resolution, ratio test, 0003 -> 0004: measured 94.5% within 2 px of the GT
    epipolar lines (median 0.11 px); the inverse pose gives ~0%."""
    root = D.dataset_path("strecha_fountain_P11")
    cameras = D.strecha_cameras()
    images = []
    for name in ("0003.jpg", "0004.jpg"):
        img = cv2.imread(str(root / "images" / name), cv2.IMREAD_GRAYSCALE)
        images.append(cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2),
                                 interpolation=cv2.INTER_AREA))
    sift = cv2.SIFT_create(nfeatures=4000)
    (k0, d0), (k1, d1) = (sift.detectAndCompute(img, None) for img in images)
    good = [m for m, n in cv2.BFMatcher(cv2.NORM_L2).knnMatch(d0, d1, k=2)
            if m.distance < 0.8 * n.distance]
    assert len(good) > 500
    p0 = np.array([k0[m.queryIdx].pt for m in good])
    p1 = np.array([k1[m.trainIdx].pt for m in good])
    K0, K1 = HALF @ cameras["0003.jpg"].K, HALF @ cameras["0004.jpg"].K
    T = D.relative_pose(cameras["0003.jpg"], cameras["0004.jpg"])
    dist = _epipolar_distances(p0, p1, K0, K1, T)
    assert np.mean(dist < 2) > 0.85 and np.median(dist) < 0.5
    assert np.mean(_epipolar_distances(p0, p1, K0, K1, np.linalg.inv(T)) < 2) < 0.1


def test_strecha_reader_rejects_bad_files(tmp_path):
    (tmp_path / "x.camera").write_text(" ".join(["1"] * 25))
    with pytest.raises(ValueError, match="26 numbers"):
        D.read_strecha_camera(tmp_path / "x.camera")


# --- ScanNet pairs -----------------------------------------------------------------------

def test_scannet_pairs(datasets_root):
    root = datasets_root / "superglue_scannet_sample"
    pairs = D.read_scannet_pairs(root / "scannet_sample_pairs_with_gt.txt")
    assert len(pairs) == 15
    assert [(p.name0, p.name1) for p in D.pose_pairs("superglue_scannet_sample")] == \
        [(p.name0, p.name1) for p in pairs]
    for p in pairs:
        assert (root / "images" / p.name0).is_file() and (root / "images" / p.name1).is_file()
        for K in (p.K0, p.K1):
            assert 1100 < K[0, 0] < 1200 and 1100 < K[1, 1] < 1200
            assert 600 < K[0, 2] < 700 and 450 < K[1, 2] < 520 and np.allclose(K[2], [0, 0, 1])
            assert K[0, 1] == K[1, 0] == 0
        R, t = p.T_0to1[:3, :3], p.T_0to1[:3, 3]
        assert np.allclose(R @ R.T, np.eye(3), atol=2e-4) and np.isclose(np.linalg.det(R), 1, atol=2e-4)
        assert np.allclose(p.T_0to1[3], [0, 0, 0, 1]) and 0.01 < np.linalg.norm(t) < 10
    first = pairs[0]
    assert first.name0 == "scene0711_00_frame-001680.jpg" and first.T_0to1[0, 3] == -1.51061


def test_scannet_reader_rejects_bad_lines(tmp_path):
    line = "a.jpg b.jpg 0 0 " + " ".join(["1"] * 34)
    (tmp_path / "pairs.txt").write_text(line + "\n\n" + line.replace(" 0 0 ", " 1 0 ") + "\n")
    with pytest.raises(ValueError, match=r"pairs.txt:3: rotated"):
        D.read_scannet_pairs(tmp_path / "pairs.txt")
    (tmp_path / "short.txt").write_text("a.jpg b.jpg 0 0 1 2 3\n")
    with pytest.raises(ValueError, match="38 fields"):
        D.read_scannet_pairs(tmp_path / "short.txt")


def test_strecha_gravity_follows_the_ground_truth_poses(datasets_root):
    """Gravity from one level world frame: rotating camera 0's gravity into camera 1 gives
    camera 1's (this fails if the camera-to-world convention is flipped), and every camera is
    within 10 degrees of upright (the level-world assumption the docstring states)."""
    from matchlab.datasets.readers import relative_pose, strecha_cameras, strecha_gravity

    cams, gravity = strecha_cameras(), strecha_gravity()
    assert sorted(gravity) == sorted(cams) and len(gravity) == 11
    names = sorted(cams)
    for a, b in zip(names, names[3:]):
        T = relative_pose(cams[a], cams[b])
        np.testing.assert_allclose(T[:3, :3] @ gravity[a], gravity[b], atol=1e-5)  # R in the files: ~7 digits
    tilt = np.degrees([np.arccos(g[1]) for g in gravity.values()])
    assert (tilt < 10).all() and tilt.max() > 1  # level world, cameras not exactly upright
