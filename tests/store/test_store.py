"""HDF5 stores: hloc layout round trips, hloc files read as written by hloc, crash safety
(a real SIGKILLed writer), truncated files and salvage."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from matchlab.geometry.laf import lafs_from_scale_ori
from matchlab.store import (FeatureStore, GlobalStore, MatchStore, MissingItemError,
                            StoreError, names_to_pair, names_to_pair_old, salvage)
from matchlab.errors import ShapeError
from matchlab.types import Features, Matches
from plain_user import run_python

REPO = Path(__file__).resolve().parents[2]


def make_features(n: int = 50, dim: int = 32, seed: int = 0, lafs: bool = False,
                  size=(640, 480)) -> Features:
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(n, 2, generator=g) * torch.tensor(size, dtype=torch.float32)
    frames = None
    if lafs:
        frames = lafs_from_scale_ori(kp, torch.rand(n, generator=g) * 8 + 1,
                                     torch.rand(n, generator=g) * 6 - 3)
    desc = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    return Features(kp, desc, torch.rand(n, generator=g), size, frames)


def assert_same(a: Features, b: Features, atol: float = 0.0) -> None:
    assert a.image_size == b.image_size
    assert torch.allclose(a.keypoints, b.keypoints, atol=atol)
    assert torch.allclose(a.descriptors, b.descriptors, atol=atol)
    assert torch.allclose(a.scores, b.scores, atol=atol)
    assert (a.lafs is None) == (b.lafs is None)
    if a.lafs is not None:
        assert torch.allclose(a.lafs, b.lafs, atol=1e-4)


# ----------------------------------------------------------------------------- keys

def test_names_to_pair_matches_hloc():
    assert names_to_pair("db/1.jpg", "q/2.jpg") == "db-1.jpg/q-2.jpg"
    assert names_to_pair_old("db/1.jpg", "q/2.jpg") == "db-1.jpg_q-2.jpg"


# ----------------------------------------------------------------------------- features

def test_feature_round_trip_nested_names_and_lafs(tmp_path):
    path = tmp_path / "features.h5"
    plain, framed = make_features(seed=1), make_features(seed=2, lafs=True)
    with FeatureStore(path) as store:
        assert store.write("db/1.jpg", plain)
        assert store.write("db/sub/2.jpg", framed)
        assert store.write("q.png", make_features(0, seed=3))  # no keypoints at all
        assert not store.write("db/1.jpg", framed)  # present: skipped, not replaced
        assert store.names() == ["db/1.jpg", "db/sub/2.jpg", "q.png"]
        assert "db/1.jpg" in store and "db" not in store and "db/sub" not in store
    with FeatureStore(path, mode="r") as store:
        assert_same(store.read("db/1.jpg"), plain)
        assert_same(store.read("db/sub/2.jpg"), framed, atol=0)
        assert len(store.read("q.png")) == 0
        assert np.array_equal(store.read_keypoints("db/1.jpg"), plain.keypoints.numpy())
    with h5py.File(path, "r") as f:  # hloc's layout, nested groups
        g = f["db"]["1.jpg"]
        assert g["descriptors"].shape == (32, 50)  # [D, N]
        assert g["keypoints"].shape == (50, 2) and tuple(g["image_size"][()]) == (640, 480)
        assert "scores" in g and "lafs" not in g
        h = f["db/sub/2.jpg"]
        assert h["lafs"].shape == (50, 2, 3) and h["oris"].attrs["units"] == "degrees"
        scale = np.sqrt(np.abs(np.linalg.det(h["lafs"][()][:, :, :2])))
        assert np.allclose(h["scales"][()], scale, rtol=1e-5)
        ori = np.degrees(np.arctan2(h["lafs"][()][:, 1, 0], h["lafs"][()][:, 0, 0]))
        assert np.allclose(h["oris"][()], ori, atol=1e-3)  # COLMAP convention, degrees


def test_as_half_halves_descriptors_not_keypoints(tmp_path):
    feats = make_features(seed=4, size=(4000, 3000))
    with FeatureStore(tmp_path / "f.h5") as store:
        store.write("a.jpg", feats, as_half=True)
        back = store.read("a.jpg")
        group = store.file["a.jpg"]
        assert group["descriptors"].dtype == np.float16 and group["keypoints"].dtype == np.float32
    assert torch.equal(back.keypoints, feats.keypoints)  # exact: fp16 would be 2 px steps here
    assert torch.allclose(back.descriptors, feats.descriptors, atol=1e-3)
    assert back.descriptors.dtype == torch.float32


def write_hloc_features(path: Path, name: str, kp, desc_dn, scores_key="scores", extra=None):
    """What hloc's extract_features writes (libver='latest', [D, N] descriptors)."""
    with h5py.File(path, "a", libver="latest") as f:
        g = f.create_group(name)
        g.create_dataset("keypoints", data=kp)
        g.create_dataset("descriptors", data=desc_dn)
        g.create_dataset(scores_key, data=np.linspace(0, 1, len(kp)).astype(np.float16))
        g.create_dataset("image_size", data=np.array([800, 600]))
        for k, v in (extra or {}).items():
            g.create_dataset(k, data=v)


def test_reads_hloc_files(tmp_path):
    path = tmp_path / "feats-disk.h5"
    rng = np.random.default_rng(0)
    kp = (rng.random((20, 2)) * 500).astype(np.float16)
    desc = rng.standard_normal((128, 20)).astype(np.float16)
    write_hloc_features(path, "db/1.jpg", kp, desc, scores_key="keypoint_scores")
    # hloc's SIFT: scales in px and oris in DEGREES (pycolmap radians through np.rad2deg)
    scales = rng.random(20).astype(np.float32) * 4 + 1
    oris_rad = rng.random(20).astype(np.float32) * 6 - 3
    write_hloc_features(path, "sift.jpg", kp, desc,
                        extra={"scales": scales, "oris": np.rad2deg(oris_rad)})
    with FeatureStore(path, mode="r") as store:
        assert store.names() == ["db/1.jpg", "sift.jpg"]
        f = store.read("db/1.jpg")
        assert f.descriptors.shape == (20, 128) and f.descriptors.dtype == torch.float32
        assert torch.allclose(f.descriptors, torch.from_numpy(desc.T.astype(np.float32)))
        assert torch.allclose(f.scores, torch.linspace(0, 1, 20), atol=1e-3)
        assert f.image_size == (800, 600) and f.lafs is None
        s = store.read("sift.jpg")
        expected = lafs_from_scale_ori(torch.from_numpy(kp.astype(np.float32)),
                                       torch.from_numpy(scales), torch.from_numpy(oris_rad))
        assert torch.allclose(s.lafs, expected, atol=1e-4)


def test_missing_name_error_names_image_and_file(tmp_path):
    path = tmp_path / "f.h5"
    with FeatureStore(path) as store:
        store.write("a.jpg", make_features())
        with pytest.raises(KeyError) as info:
            store.read("b.jpg")
    assert isinstance(info.value, MissingItemError)
    assert "'b.jpg'" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(StoreError, match="no such file"):
        FeatureStore(tmp_path / "absent.h5", mode="r")


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "f.h5"
    FeatureStore(path).close()
    with FeatureStore(path, mode="r") as store, pytest.raises(StoreError, match="read-only"):
        store.write("a.jpg", make_features())


def test_a_leftover_that_is_not_an_item_is_replaced(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:  # e.g. written by a tool that died half-way
        f.create_group("a.jpg").create_dataset("descriptors", data=np.zeros((3, 2), np.float32))
    feats = make_features(seed=5)
    with FeatureStore(path) as store:
        assert "a.jpg" not in store and store.names() == []
        assert store.write("a.jpg", feats)
        assert_same(store.read("a.jpg"), feats)
        store.write("db/1.jpg", feats)
        with pytest.raises(StoreError, match="folder"):
            store.write("db", feats)  # would delete db/1.jpg


def test_exception_during_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "f.h5"
    real = h5py.Group.create_dataset
    calls = []

    def flaky(self, name, *args, **kwargs):
        calls.append(name)
        if name == "descriptors":
            raise KeyboardInterrupt
        return real(self, name, *args, **kwargs)

    with FeatureStore(path) as store:
        monkeypatch.setattr(h5py.Group, "create_dataset", flaky)
        with pytest.raises(KeyboardInterrupt):
            store.write("a.jpg", make_features())
        monkeypatch.setattr(h5py.Group, "create_dataset", real)
        assert "a.jpg" not in store
        assert store.write("a.jpg", make_features())
    assert calls[:2] == ["keypoints", "descriptors"]


# ----------------------------------------------------------------------------- matches

def test_match_store_round_trip_both_orders(tmp_path):
    path = tmp_path / "matches.h5"
    m0 = torch.tensor([3, -1, 0, 7, -1])
    matches = Matches(m0, torch.tensor([0.9, 0.0, 0.5, 0.25, 0.0]))
    with MatchStore(path) as store:
        assert store.write("db/a.jpg", "q/b.jpg", matches)
        assert not store.write("q/b.jpg", "db/a.jpg", matches)  # present in the other order
        assert ("db/a.jpg", "q/b.jpg") in store and ("q/b.jpg", "db/a.jpg") in store
        assert ("db/a.jpg", "c.jpg") not in store
        idx, scores = store.read_pairs("db/a.jpg", "q/b.jpg")
        assert idx.dtype == np.int64 and scores.dtype == np.float32
        assert idx.tolist() == [[0, 3], [2, 0], [3, 7]]
        assert np.allclose(scores, [0.9, 0.5, 0.25])
        ridx, rscores = store.read_pairs("q/b.jpg", "db/a.jpg")
        assert ridx.tolist() == [[0, 2], [3, 0], [7, 3]]  # flipped, sorted by first column
        assert np.allclose(rscores, [0.5, 0.9, 0.25])
        with pytest.raises(KeyError, match="c.jpg"):
            store.read_pairs("db/a.jpg", "c.jpg")
    with h5py.File(path, "r") as f:
        g = f["db-a.jpg"]["q-b.jpg"]
        assert g["matches0"].dtype == np.int32 and g["matching_scores0"].shape == (5,)


def test_metadata_cache_stays_within_its_limit_over_many_writes(tmp_path):
    """Crash-safe writes stop HDF5's metadata cache from evicting while an item is built; it
    must shrink back afterwards, or it keeps the entries of every item written (memory grew
    with the number of pairs: 2.5 MB of cache here, gigabytes at 10^5 pairs)."""
    path = tmp_path / "matches.h5"
    m0 = torch.arange(200) % 7 - 1
    matches = Matches(m0, (m0 >= 0).float())
    with MatchStore(path) as store:
        for i in range(1500):
            store.write(f"{i // 30}.jpg", f"{i}b.jpg", matches)
        limit, _, size, entries = store.file.id.get_mdc_size()
        assert size <= limit, f"{size} bytes in {entries} cache entries, limit {limit}"
    with MatchStore(path, "r") as store:
        idx, _ = store.read_pairs("49.jpg", "1499b.jpg")
        assert np.array_equal(idx[:, 1], m0[m0 >= 0].numpy())


def test_reads_hloc_int16_matches_with_both_separators(tmp_path):
    path = tmp_path / "matches-hloc.h5"
    big = np.array([40000, -1, 32767, 65534], dtype=np.int64)  # hloc's .short() wraps these
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group(names_to_pair("db/a.jpg", "b.jpg"))
        g.create_dataset("matches0", data=np.array([1, -1, 0], np.int16))
        g.create_dataset("matching_scores0", data=np.array([0.5, 0, 1], np.float16))
        old = f.create_group(names_to_pair_old("c.jpg", "d.jpg"))
        old.create_dataset("matches0", data=big.astype(np.int16))
        old.create_dataset("matching_scores0", data=np.ones(4, np.float16))
    with MatchStore(path, mode="r") as store:
        idx, scores = store.read_pairs("db/a.jpg", "b.jpg")
        assert idx.tolist() == [[0, 1], [2, 0]] and scores.tolist() == [0.5, 1.0]
        assert ("d.jpg", "c.jpg") in store
        idx, _ = store.read_pairs("c.jpg", "d.jpg")
        assert idx.tolist() == [[0, 40000], [2, 32767], [3, 65534]]
        assert store.read_pairs("d.jpg", "c.jpg")[0].tolist() == [[32767, 2], [40000, 0],
                                                                  [65534, 3]]


def test_global_store_round_trip(tmp_path):
    path = tmp_path / "global.h5"
    desc = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    with GlobalStore(path) as store:
        for i, name in enumerate(["db/1.jpg", "db/2.jpg", "q.jpg"]):
            assert store.write(name, desc[i])
        assert not store.write("q.jpg", desc[0])
        assert store.names() == ["db/1.jpg", "db/2.jpg", "q.jpg"]
        assert torch.equal(store.read("db/2.jpg"), desc[1])
        assert torch.equal(store.read_many(["q.jpg", "db/1.jpg"]), desc[[2, 0]])
    with h5py.File(path, "r") as f:
        assert f["db/1.jpg/global_descriptor"].shape == (64,)


# ----------------------------------------------------------------------------- damaged files

def fill(path: Path, n: int, dim: int = 64) -> dict[str, Features]:
    items = {f"img{i:03d}.jpg": make_features(200 + 10 * i, dim, seed=i) for i in range(n)}
    with FeatureStore(path) as store:
        for name, feats in items.items():
            store.write(name, feats)
    return items


def test_truncated_file_gives_clear_error(tmp_path):
    path = tmp_path / "features.h5"
    fill(path, 30)
    os.truncate(path, path.stat().st_size // 2)
    for mode in ("r", "a"):
        with pytest.raises(StoreError) as info:
            FeatureStore(path, mode=mode)
        message = str(info.value)
        assert str(path) in message and "truncated" in message and "matchlab salvage" in message
    # half the file is gone, and with it HDF5's index of the items (written near the end):
    # salvage says so and leaves the file alone
    before = path.read_bytes()
    with pytest.raises(StoreError, match="no intact item"):
        salvage(path)
    assert path.read_bytes() == before and not (tmp_path / "features.h5.corrupt").exists()


def test_salvage_keeps_intact_items_of_a_file_missing_its_tail(tmp_path):
    path = tmp_path / "features.h5"
    items = fill(path, 30)
    os.truncate(path, path.stat().st_size - 20_000)  # the last item's data is cut
    report = salvage(path)
    assert report["backup"] == tmp_path / "features.h5.corrupt" and report["backup"].is_file()
    assert len(report["kept"]) >= 25 and "img029.jpg" in report["dropped"]
    with FeatureStore(path) as store:
        assert store.names() == report["kept"]
        for name in store.names():
            assert_same(store.read(name), items[name])
        for name in items:  # the run completes
            store.write(name, items[name])
        assert store.names() == sorted(items)


def test_damage_left_by_a_killed_writer_is_repaired_on_the_next_run(tmp_path):
    """A kill in the middle of HDF5's flush of an item can leave a link to an object header
    that never reached the disk. Simulated: garbage over one dataset header, and the mark a
    killed writer leaves on the root."""
    path = tmp_path / "features.h5"
    items = fill(path, 10)
    with h5py.File(path, "a") as f:
        address = h5py.h5o.get_info(f["img004.jpg/descriptors"].id).addr
        f.attrs["_matchlab_writing"] = 1
    with open(path, "r+b") as fh:
        fh.seek(address)
        fh.write(b"\xff" * 16)
    with FeatureStore(path, mode="r") as store:  # readers see a clear error for that item
        with pytest.raises(StoreError, match="img004.jpg"):
            store.read("img004.jpg")
    with pytest.warns(UserWarning, match="damaged when the previous run was killed"):
        store = FeatureStore(path)
    with store:
        assert store.names() == sorted(set(items) - {"img004.jpg"})
        for name in store.names():
            assert_same(store.read(name), items[name])
        assert store.write("img004.jpg", items["img004.jpg"])  # the run completes
    assert (tmp_path / "features.h5.corrupt").is_file()
    with FeatureStore(path, mode="r") as store:
        assert store.names() == sorted(items)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "matches.h5"
    path.write_text("pairs: a b\n")
    with pytest.raises(StoreError, match="not an HDF5 file"):
        MatchStore(path)


# ----------------------------------------------------------------------------- SIGKILL

WRITER = r"""
import sys
import torch
from matchlab.store import FeatureStore
from matchlab.types import Features

def make(i):
    g = torch.Generator().manual_seed(i)
    n = 300 + (i * 37) % 900
    return Features(torch.rand(n, 2, generator=g) * 500, torch.randn(n, 128, generator=g),
                    torch.rand(n, generator=g), (500, 400))

if __name__ == "__main__":
    path, total = sys.argv[1], int(sys.argv[2])
    with FeatureStore(path) as store:
        for i in range(total):
            if store.write(f"seq/{i:04d}.jpg", make(i)):
                print(i, flush=True)
"""


def run_writer(script: Path, path: Path, total: int, kill_after: int | None, seed: int):
    """Run the writer; SIGKILL it a random moment after `kill_after` items. Items written."""
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(total)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    done = []
    if kill_after is None:
        done = [int(line) for line in proc.communicate(timeout=300)[0].split()]
        assert proc.returncode == 0
        return done
    for line in proc.stdout:
        done.append(int(line))
        if len(done) >= kill_after:
            break
    time.sleep(np.random.default_rng(seed).random() * 0.05)  # somewhere inside a write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return done


@pytest.mark.slow
@pytest.mark.parametrize("created_by", ["matchlab", "hloc"])
def test_sigkill_mid_write_then_resume(tmp_path, created_by):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    namespace: dict = {}
    exec(WRITER, namespace)
    make = namespace["make"]
    path = tmp_path / "features.h5"
    if created_by == "hloc":  # hloc creates with libver='latest': superblock v3 + status flags
        h5py.File(path, "w", libver="latest").close()
    total, confirmed = 150, set()
    kills = [5, 40] if created_by == "matchlab" else [20]  # each run costs a torch import
    for round_, kill_after in enumerate(kills):
        done = run_writer(script, path, total, kill_after, seed=round_)
        confirmed |= set(done)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stale-flag notice for the hloc-made file
            with FeatureStore(path) as store:  # as the next run opens it: checked, repaired
                names = store.names()
                present = {int(n[4:8]) for n in names}
                assert confirmed <= present  # every write that returned survived the kill
                for i in present:
                    assert_same(store.read(f"seq/{i:04d}.jpg"), make(i))
    rest = run_writer(script, path, total, None, seed=0)
    assert set(rest).isdisjoint(confirmed)  # resumed: finished items were skipped
    with FeatureStore(path, mode="r") as store:
        assert store.names() == [f"seq/{i:04d}.jpg" for i in range(total)]
        for i in (0, 77, total - 1):
            assert_same(store.read(f"seq/{i:04d}.jpg"), make(i))


def test_live_writer_is_not_mistaken_for_a_dead_one(tmp_path):
    path = tmp_path / "f.h5"
    h5py.File(path, "w", libver="latest").close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); "
         "print('open', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="another process"):
            FeatureStore(path)
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="killed"):  # now the flag is stale: cleared, opens
        FeatureStore(path).close()


# ----------------------------------------------------------------------------- not damaged, blocked

def test_non_finite_keypoints_are_refused_naming_the_image(tmp_path):
    path = tmp_path / "features.h5"
    feats = make_features()
    bad = Features(feats.keypoints.clone(), feats.descriptors, feats.scores, feats.image_size)
    bad.keypoints[3, 0] = float("nan")
    with FeatureStore(path) as store:
        with pytest.raises(ShapeError, match="'a.jpg'.*not all finite"):
            store.write("a.jpg", bad)
        store.write("a.jpg", feats)
        store.write("b.jpg", feats)
    with h5py.File(path, "a") as f:  # written by another tool
        f["b.jpg/keypoints"][5] = [np.inf, 1.0]
    with FeatureStore(path, "r") as store:
        assert_same(store.read("a.jpg"), feats)
        for read in (store.read, store.read_keypoints):
            with pytest.raises(StoreError, match=r"'b.jpg' has 1 of 50 keypoints that are not "
                                                 r"finite"):
                read("b.jpg")


def test_file_locked_by_another_writer_is_not_called_damaged(tmp_path):
    import fcntl

    path = tmp_path / "features.h5"
    fill(path, 2)
    with open(path, "rb") as held:  # what a live writer's HDF5 holds
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StoreError) as info:
            FeatureStore(path)
    message = str(info.value)
    assert "another process" in message and "not damaged" in message
    assert "salvage" not in message and "delete" not in message.lower()
    with FeatureStore(path, "r") as store:
        assert len(store.names()) == 2


def test_output_below_a_file_is_not_called_damaged(tmp_path):
    (tmp_path / "out").write_text("a file where a folder should be")
    with pytest.raises(StoreError, match=r"out is a file, not a folder"):
        MatchStore(tmp_path / "out" / "matches.h5")
    with pytest.raises(StoreError, match=r"is a folder, not an HDF5 file"):
        FeatureStore(tmp_path)


@pytest.mark.parametrize("blocked", ["file", "folder"])
def test_read_only_file_or_folder_is_not_called_damaged(tmp_path, blocked):
    """Opened by a user bound by file permissions (a child process; root gives up its
    override): the error says permission denied, not damaged; a read-only file still reads."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / ("features.h5" if blocked == "file" else "new.h5")
    if blocked == "file":
        fill(path, 2)
    target = path if blocked == "file" else folder
    mode = target.stat().st_mode
    target.chmod(0o555 if blocked == "folder" else 0o444)
    code = f"""
from matchlab.store import FeatureStore, StoreError
try:
    FeatureStore({str(path)!r})
except StoreError as e:
    print("ERROR", e)
if {blocked == "file"}:
    with FeatureStore({str(path)!r}, "r") as store:
        print("READ", len(store.names()))
"""
    try:
        proc = run_python(code)
    finally:
        target.chmod(mode)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    message = next(line for line in lines if line.startswith("ERROR"))
    assert str(path) in message and "permission denied" in message
    assert "not damaged" in message and "salvage" not in message
    if blocked == "file":  # reading still works
        assert "READ 2" in lines
