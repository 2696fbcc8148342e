"""--executor ray on a real Ray cluster of three nodes on this machine (a head and two
worker nodes of one CPU each, started by Ray's own test utilities; no fixed ports or paths):
results equal the local executor's, a killed worker is retried, a killed driver resumes.
Inputs are tiny (four sacre_coeur images at 320 px, SIFT with 256 keypoints, mutual NN) to
keep the cluster's cost, about 15 s to start, the main one."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ray = pytest.importorskip("ray")  # `make test` installs it (the `ray` extra)

from matchlab.cli.app import main  # noqa: E402
from matchlab.distributed.executors import WorkerSpec  # noqa: E402
from matchlab.distributed.ray_executor import RayExecutor  # noqa: E402
from matchlab.pipeline import extract_features, match_pairs, model_record  # noqa: E402
from matchlab.registry import load_extractor, load_matcher  # noqa: E402

# each test starts Ray workers (a process importing torch and building a model: seconds)
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXTRACTOR = {"resize": 320, "max_keypoints": 256}
CLI_EXTRACTOR = ["--features", "sift", "--resize", "320", "--max-keypoints", "256"]


@pytest.fixture(scope="module")
def cluster():
    """(address, raylet process ids) of a head and two worker nodes, one CPU each; this
    process is connected to it (executors then use that connection)."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 80 * 1024 ** 2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**node)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    raylets = {n.all_processes["raylet"][0].process.pid
               for n in [cluster.head_node, *cluster.worker_nodes]}
    yield cluster.address, raylets
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def scene(datasets_root, tmp_path_factory):
    """Four images, their exhaustive pairs, and the local executor's features and matches."""
    image_dir = datasets_root / "hloc_sacre_coeur" / "mapping"
    names = sorted(p.name for p in image_dir.glob("*.jpg"))[:4]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    work = tmp_path_factory.mktemp("ray_local")
    extractor, matcher = load_extractor("sift", **EXTRACTOR), load_matcher("nn", mutual_check=True)
    extract_features(image_dir, names, work / "features.h5", extractor, progress=False,
                     record=model_record("sift", extractor))
    match_pairs(pairs, work / "features.h5", work / "matches.h5", matcher, progress=False,
                record=model_record("nn", matcher))
    return {"image_dir": image_dir, "names": names, "pairs": pairs, "extractor": extractor,
            "matcher": matcher, "local": work}


def contents(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file by its path."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: out.__setitem__(key, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return out


def assert_same(path: Path, reference: Path) -> None:
    a, b = contents(path), contents(reference)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def run_ray(scene, out: Path, **options) -> tuple:
    with RayExecutor(workers=2, **options) as executor:
        extracted = extract_features(scene["image_dir"], scene["names"], out / "features.h5",
                                     scene["extractor"], progress=False, executor=executor,
                                     record=model_record("sift", scene["extractor"]))
        matched = match_pairs(scene["pairs"], out / "features.h5", out / "matches.h5",
                              scene["matcher"], progress=False, executor=executor,
                              batch_size=2, record=model_record("nn", scene["matcher"]))
    return extracted, matched


def test_ray_results_equal_local(cluster, scene, tmp_path):
    extracted, matched = run_ray(scene, tmp_path)
    assert (extracted.done, extracted.failed, matched.done) == (4, {}, 6)
    assert_same(tmp_path / "features.h5", scene["local"] / "features.h5")
    assert_same(tmp_path / "matches.h5", scene["local"] / "matches.h5")


def test_ship_images_gives_the_same_results(cluster, scene, tmp_path):
    run_ray(scene, tmp_path, ship_images=True)
    assert_same(tmp_path / "features.h5", scene["local"] / "features.h5")
    assert_same(tmp_path / "matches.h5", scene["local"] / "matches.h5")


def test_no_worker_can_start_is_one_clear_error(cluster, scene, tmp_path):
    from matchlab.errors import ClusterError

    with RayExecutor(gpus_per_worker=1) as executor:  # the cluster has no GPU
        with pytest.raises(ClusterError, match="the Ray cluster has no GPU"):
            extract_features(scene["image_dir"], scene["names"], tmp_path / "f.h5",
                             scene["extractor"], progress=False, executor=executor)
    broken = WorkerSpec("extractor", "sift", {"no_such_option": 1})  # fails on the workers
    with RayExecutor(workers=2) as executor:
        with pytest.raises(ClusterError, match="no extractor worker could be started: .*"
                                               "no_such_option"):
            list(executor.map(broken, "extract", ["a.jpg"], lambda name: (name, name)))


def worker_processes(raylets: set[int], method: str) -> list[int]:
    """Process ids of this cluster's workers running Worker.`method` (Ray titles them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent in raylets and title.startswith(f"ray::Worker.{method}"):
            found.append(int(entry.name))
    return found


def test_killed_worker_is_retried(cluster, scene, tmp_path):
    _, raylets = cluster
    killed = []

    def kill_one() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            running = worker_processes(raylets, "extract")
            if running:
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        with RayExecutor(workers=2) as executor:
            report = extract_features(scene["image_dir"], scene["names"],
                                      tmp_path / "features.h5", scene["extractor"],
                                      progress=False, executor=executor)
    finally:
        killer.join()
    assert killed, "no worker was seen extracting"
    assert (report.done, report.failed) == (4, {})
    assert_same(tmp_path / "features.h5", scene["local"] / "features.h5")


def test_killed_driver_resumes_without_redoing(cluster, datasets_root, tmp_path, capsys):
    address, _ = cluster
    image_dir = datasets_root / "hloc_sacre_coeur" / "mapping"
    output = tmp_path / "features.h5"
    command = ["extract", str(image_dir), str(output), *CLI_EXTRACTOR, "--executor", "ray",
               "--ray-address", address]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "matchlab", *command], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = b""
    while driver.poll() is None:  # the progress bar: "extract:  20%|...| 2/10"
        progress += driver.stderr.read1(4096)
        counts = [int(c) for c in re.findall(rb"\| *(\d+)/10", progress)]
        if counts and max(counts) >= 2:
            driver.send_signal(signal.SIGKILL)
            break
    driver.wait()
    driver.stderr.close()
    assert driver.returncode == -signal.SIGKILL, progress.decode(errors="replace")[-2000:]
    before = contents(output)
    finished = {key.split("/")[0] for key in before}
    assert len(finished) >= 2
    assert main(command) == 0  # the rerun: this process, on the same cluster
    printed = capsys.readouterr().out
    assert re.search(rf"extracted +{10 - len(finished)} ", printed), printed
    assert re.search(rf"skipped +{len(finished)} +already in", printed), printed
    after = contents(output)
    assert len({key.split("/")[0] for key in after}) == 10
    for key, value in before.items():  # finished items are untouched
        np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_sfm_on_ray_equals_local(cluster, datasets_root, tmp_path):
    """Acceptance: `matchlab sfm` of sacre_coeur on the two-worker cluster registers the
    same images as a local run, with the same number of points (within 1 %). SuperPoint at
    640 px with 1024 keypoints and mutual NN is the cheapest setting measured to register
    all ten images (SIFT at 640/1024 and 1024/2048 with ratio 0.8: 3 and 4; SuperPoint at
    480 px: 9), with 2,000 RANSAC trials in verification (a few seconds less, 10 too)."""
    import json

    address, _ = cluster
    image_dir = datasets_root / "hloc_sacre_coeur" / "mapping"
    options = ["--features", "superpoint", "--resize", "640", "--max-keypoints", "1024",
               "--matcher", "nn", "--matcher-conf", "mutual_check=true", "--plots", "0",
               "--verify-options", "ransac.max_num_trials=2000"]
    assert main(["sfm", str(image_dir), str(tmp_path / "local"), *options]) == 0
    assert main(["sfm", str(image_dir), str(tmp_path / "ray"), *options, "--executor", "ray",
                 "--ray-address", address, "--workers", "2"]) == 0
    local, remote = (json.loads((tmp_path / run / "summary.json").read_text())
                     for run in ("local", "ray"))
    assert remote["num_reg_images"] == local["num_reg_images"] == 10
    assert sorted(remote["registered"]) == sorted(local["registered"])
    assert abs(remote["num_points3D"] - local["num_points3D"]) <= 0.01 * local["num_points3D"]


def test_pairs_global_descriptors_on_ray(cluster, scene, tmp_path):
    """`matchlab pairs --global mixvpr --executor ray`: the same descriptors and pairs as a
    local run (a 128-d MixVPR with random weights saved as a checkpoint)."""
    import torch

    from matchlab.retrieval.mixvpr import MixVPR

    address, _ = cluster
    checkpoint = tmp_path / "mixvpr.ckpt"
    torch.save(MixVPR(weights="random", dim=128).state_dict(), checkpoint)
    image_dir = tmp_path / "images"  # the four images only
    image_dir.mkdir()
    for name in scene["names"]:
        (image_dir / name).symlink_to(scene["image_dir"] / name)
    command = ["pairs", "--image-dir", str(image_dir), "--pairs", "retrieval:2",
               "--global", "mixvpr", "--weights", str(checkpoint)]
    assert main([*command, str(tmp_path / "local" / "pairs.txt")]) == 0
    assert main([*command, str(tmp_path / "ray" / "pairs.txt"), "--executor", "ray",
                 "--ray-address", address, "--workers", "2"]) == 0
    local = contents(tmp_path / "local" / "global.h5")
    remote = contents(tmp_path / "ray" / "global.h5")
    assert sorted(local) == sorted(remote) and len(local) == 4
    for key in local:
        np.testing.assert_allclose(remote[key], local[key], atol=1e-6, err_msg=key)
    assert (tmp_path / "ray" / "pairs.txt").read_text() == \
        (tmp_path / "local" / "pairs.txt").read_text()
