"""User mistakes give one line `matchlab: error: ...` and exit status 1, never a traceback:
every image unreadable, OUTPUT_DIR a file, an unwritable pairs output, a checkpoint that is not
one, a foreign .npz. Each case runs the real `matchlab` command in a subprocess on real images."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matchlab.cli import main
from plain_user import drop_permission_override

REPO = Path(__file__).resolve().parents[2]
SIFT = ["--features", "sift", "--resize", "320", "--max-keypoints", "256"]


def matchlab(*args, as_plain_user: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m matchlab ARGS`; as_plain_user: bound by file permissions even as root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "matchlab", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=drop_permission_override if as_plain_user else None)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The error line of a run that failed as a user error should (status 1, no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("matchlab: error: ")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, datasets_root):
    """good/: two real photographs; broken/: the same JPEGs truncated to half."""
    root = tmp_path_factory.mktemp("errors")
    for name in ("sacre_coeur1.jpg", "sacre_coeur2.jpg"):
        data = (datasets_root / "lightglue_assets" / name).read_bytes()
        (root / "good").mkdir(exist_ok=True)
        (root / "broken").mkdir(exist_ok=True)
        (root / "good" / name).write_bytes(data)
        (root / "broken" / name).write_bytes(data[: len(data) // 2])
    return root


@pytest.mark.slow  # a subprocess that loads torch: about 10 s on a busy machine
def test_extract_fails_when_every_image_fails(folders):
    out = folders / "broken.h5"
    proc = matchlab("extract", folders / "broken", out, *SIFT)
    one_line_error(proc, "none of the 2 images", str(folders / "broken"))
    assert "failed" in proc.stdout and "sacre_coeur1.jpg" in proc.stdout


def test_extract_with_some_good_images_succeeds(folders, capsys):
    mixed = folders / "mixed"
    mixed.mkdir()
    shutil.copy(folders / "good" / "sacre_coeur1.jpg", mixed / "a.jpg")
    shutil.copy(folders / "broken" / "sacre_coeur2.jpg", mixed / "b.jpg")
    assert main(["extract", str(mixed), str(folders / "mixed.h5"), *SIFT]) == 0
    assert "b.jpg" in capsys.readouterr().out


@pytest.mark.slow
def test_sfm_fails_in_one_line(folders, tmp_path):
    """Every image unreadable; OUTPUT_DIR a file; a bad pairs spec (refused before any work)."""
    one_line_error(matchlab("sfm", folders / "broken", tmp_path / "sfm", *SIFT),
                   "fewer than two readable images")
    a_file = tmp_path / "model.txt"
    a_file.write_text("not a folder\n")
    one_line_error(matchlab("sfm", folders / "good", a_file, *SIFT),
                   f"OUTPUT_DIR {a_file} is a file")
    assert a_file.read_text() == "not a folder\n"
    one_line_error(matchlab("sfm", folders / "good", tmp_path / "new", "--pairs", "sequentail:3"),
                   "bad pairs spec 'sequentail:3'")
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def descriptors(folders):
    """An hloc global-descriptor file of three images."""
    from matchlab.store import GlobalStore

    path = folders / "global.h5"
    rng = np.random.default_rng(0)
    with GlobalStore(path) as store:
        for i in range(3):
            store.write(f"img{i}.jpg", rng.standard_normal(8).astype(np.float32))
    return path


@pytest.mark.slow  # a subprocess that loads torch: about 10 s on a busy machine
def test_pairs_output_that_is_a_folder(descriptors, tmp_path):
    (tmp_path / "pairs.txt").mkdir()
    one_line_error(matchlab("pairs", tmp_path / "pairs.txt", "--descriptors", descriptors,
                            "--pairs", "exhaustive"),
                   f"cannot write pairs file {tmp_path / 'pairs.txt'}: Is a directory")


@pytest.mark.slow  # a subprocess that loads torch: about 10 s on a busy machine
def test_pairs_output_without_permission(descriptors, tmp_path):
    """A folder the user may not write to: the message says so, and nothing is left there."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        proc = matchlab("pairs", locked / "pairs.txt", "--descriptors", descriptors,
                        "--pairs", "exhaustive", as_plain_user=os.geteuid() == 0)
    except subprocess.SubprocessError as e:  # a root that may not drop its capabilities
        pytest.skip(f"cannot run as a user bound by permissions: {e}")
    finally:
        locked.chmod(0o755)
    one_line_error(proc, f"cannot write pairs file {locked / 'pairs.txt'}: Permission denied")
    assert list(locked.iterdir()) == []


@pytest.mark.slow  # a subprocess that loads torch: about 10 s on a busy machine
@pytest.mark.parametrize("kind", ["garbage", "npz"])
def test_checkpoint_that_is_not_one(folders, tmp_path, kind):
    weights = tmp_path / f"superpoint.{'pth' if kind == 'garbage' else 'npz'}"
    if kind == "garbage":
        weights.write_text("this is not a checkpoint\n")
    else:
        np.savez(weights, centroids=np.zeros((2, 2)))
    proc = matchlab("extract", folders / "good", tmp_path / "f.h5", "--features", "superpoint",
                    "--extractor-conf", f"weights={weights}")
    one_line_error(proc, f"cannot load checkpoint {weights}")
    assert not (tmp_path / "f.h5").exists()


@pytest.mark.slow  # a subprocess that loads torch: about 10 s on a busy machine
def test_foreign_npz_as_vlad_vocabulary(folders, tmp_path, capsys):
    features = tmp_path / "features.h5"
    assert main(["extract", str(folders / "good"), str(features), *SIFT]) == 0
    vocabulary = tmp_path / "vlad_vocabulary.npz"
    np.savez(vocabulary, weights=np.ones((3, 3)))  # someone else's arrays
    proc = matchlab("pairs", tmp_path / "pairs.txt", "--image-dir", folders / "good",
                    "--features", features, "--global", "vlad", "--pairs", "retrieval:1")
    one_line_error(proc, f"{vocabulary} is not a VLAD vocabulary written by matchlab")
    assert np.load(vocabulary)["weights"].shape == (3, 3)  # left as it was


def test_checkpoint_of_another_model(folders, tmp_path, shared_weights, capsys):
    weights = shared_weights / "AffNet.pth"
    assert main(["extract", str(folders / "good"), str(tmp_path / "f.h5"), "--features",
                 "superpoint", "--extractor-conf", f"weights={weights}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"matchlab: error: checkpoint {weights} does not fit SuperPoint: ")
    assert err.count("\n") == 1


def test_sfm_refuses_bad_options_before_any_work(folders, tmp_path, capsys):
    """Mistakes that would surface only after extraction are refused at once."""
    cases = {("--pairs", f"file:{tmp_path / 'nope.txt'}"): "pairs file not found",
             ("--pairs", "retrieval:2", "--global", "netvlad"): "bad global descriptor 'netvlad'",
             ("--camera-model", "PINHOLES"): "unknown --camera-model 'PINHOLES'",
             ("--gravity", str(folders / "good" / "sacre_coeur1.jpg")): "--gravity: "}
    for options, message in cases.items():
        out = tmp_path / "sfm"
        assert main(["sfm", str(folders / "good"), str(out), *SIFT, *options]) == 1, options
        err = capsys.readouterr().err
        assert err.startswith("matchlab: error: ") and message in err, (options, err)
        assert not out.exists()


def test_eval_refuses_a_dataset_the_benchmark_lacks(tmp_path, capsys):
    assert main(["eval", "homography", "--dataset", "oxford_grafitti", "--output",
                 str(tmp_path)]) == 1
    assert "--dataset oxford_grafitti: not in this benchmark; it has oxford_graf, evd" in \
        capsys.readouterr().err
    assert main(["eval", "sfm-pairs", "--dataset", "sacre", "--output", str(tmp_path)]) == 1
    assert "it has sacre_coeur, fountain" in capsys.readouterr().err
