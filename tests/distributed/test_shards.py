"""`--shard I/N` and `matchlab merge`: shards of extract, match and global descriptors merged
equal one unsharded run; shards that do not belong together are refused with a message naming
what differs; an interrupted merge resumes. Real sacre_coeur photos, SIFT at 320 px."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from matchlab.cli import main
from matchlab.distributed.shards import SHARD_ENTRY, Shard, merge_shards, parse_shard, split
from matchlab.errors import OutputMismatchError, UsageError
from matchlab.store.tree import WRITING

SIFT = ["--features", "sift", "--resize", "320", "--max-keypoints", "96", "--device", "cpu"]


def run(*argv) -> int:
    return main([str(a) for a in argv])


def contents(path) -> dict:
    """{path in the file: (dtype, shape, bytes) of a dataset, or attributes of a group}, with
    the root's attributes; what two runs must agree on to be the same results."""
    found = {"/": {k: str(v) for k, v in h5py.File(path, "r").attrs.items() if k != WRITING}}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                found[name] = (str(value.dtype), value.shape, value.tobytes(),
                               dict(obj.attrs))
            else:
                found[name] = {k: str(v) for k, v in obj.attrs.items()}
        f.visititems(visit)
    return found


@pytest.fixture(scope="module")
def scene(tmp_path_factory, datasets_root):
    """Five photos; features, matches (exhaustive pairs) and VLAD global descriptors, each
    unsharded (`full_*`) and as shards 0/2 and 1/2."""
    root = tmp_path_factory.mktemp("shards")
    images = root / "images"
    images.mkdir()
    source = datasets_root / "hloc_sacre_coeur" / "mapping"
    for photo in sorted(source.iterdir())[:5]:
        shutil.copy(photo, images / photo.name)
    names = sorted(p.name for p in images.iterdir())
    pairs = root / "pairs.txt"
    pairs.write_text("".join(f"{a} {b}\n" for i, a in enumerate(names) for b in names[i + 1:]))
    assert run("extract", images, root / "full_features.h5", *SIFT) == 0
    match = ["--matcher", "nn", "--device", "cpu"]
    assert run("match", root / "full_features.h5", pairs, root / "full_matches.h5", *match) == 0
    vlad = ["--image-dir", images, "--features", root / "full_features.h5", "--global", "vlad",
            "--pairs", "retrieval:2"]
    assert run("pairs", root / "full_pairs.txt", "--descriptors", root / "full" / "global.h5",
               *vlad) == 0
    for i in range(2):
        assert run("extract", images, root / f"features_{i}.h5", *SIFT, "--shard", f"{i}/2") == 0
        assert run("match", root / "full_features.h5", pairs, root / f"matches_{i}.h5", *match,
                   "--shard", f"{i}/2") == 0
        assert run("pairs", root / "unused.txt", "--descriptors", root / f"g{i}" / "global.h5",
                   *vlad, "--shard", f"{i}/2") == 0
    assert not (root / "unused.txt").exists()  # a global shard writes no pairs
    return root


@pytest.mark.parametrize("kind, full", [("features", "full_features.h5"),
                                        ("matches", "full_matches.h5"),
                                        ("global", "full/global.h5")])
def test_merged_shards_equal_an_unsharded_run(scene, tmp_path, kind, full):
    shards = [scene / f"g{i}" / "global.h5" if kind == "global" else scene / f"{kind}_{i}.h5"
              for i in (1, 0)]  # any order
    assert run("merge", tmp_path / "merged.h5", *shards) == 0
    merged, expected = contents(tmp_path / "merged.h5"), contents(scene / full)
    assert SHARD_ENTRY not in merged
    assert merged.keys() == expected.keys()
    assert merged == expected
    parts = [{key for key, value in contents(s).items() if isinstance(value, tuple)
              and not key.startswith(SHARD_ENTRY)} for s in shards]  # datasets
    assert parts[0] and parts[1] and not parts[0] & parts[1]  # the work was split


def test_global_descriptor_selection_from_the_merged_file(scene, tmp_path):
    """The flow docs/usage.md gives: merge the descriptor shards, select pairs from them."""
    merged = tmp_path / "global.h5"
    assert run("merge", merged, scene / "g0" / "global.h5", scene / "g1" / "global.h5") == 0
    assert run("pairs", tmp_path / "pairs.txt", "--descriptors", merged,
               "--pairs", "retrieval:2") == 0
    assert (tmp_path / "pairs.txt").read_text() == (scene / "full_pairs.txt").read_text()


def _shard_copy(scene, tmp_path, name: str):
    target = tmp_path / name
    shutil.copy(scene / name, target)
    return target


def test_refusals_name_what_is_wrong(scene, tmp_path, datasets_root):
    f0, f1 = scene / "features_0.h5", scene / "features_1.h5"
    out = tmp_path / "out.h5"
    with pytest.raises(UsageError, match=r"shard 1/2 not given \(1 of 2 missing\)"):
        merge_shards(out, [f0])
    with pytest.raises(UsageError, match=r"overlap: both hold 2 of the same items"):
        merge_shards(out, [f0, _shard_copy(scene, tmp_path, "features_0.h5"), f1])
    with pytest.raises(UsageError, match=r"given twice"):
        merge_shards(out, [f0, f0, f1])
    with pytest.raises(UsageError, match=r"different kinds of results"):
        merge_shards(out, [f0, scene / "matches_1.h5"])
    with pytest.raises(UsageError, match=r"not a shard file"):
        merge_shards(out, [f0, scene / "full_features.h5"])
    images = scene / "images"
    other = tmp_path / "other.h5"  # shard 1/2 with other options
    assert run("extract", images, other, *SIFT[:-2], "--max-keypoints", "32", "--shard", "1/2",
               "--device", "cpu") == 0
    with pytest.raises(OutputMismatchError, match=r"different models or options "
                                                  r"\(matchlab_extractor.conf.max_keypoints: "
                                                  r"96 vs 32\); merging them would mix"):
        merge_shards(out, [f0, other])
    thirds = tmp_path / "thirds.h5"
    assert run("extract", images, thirds, *SIFT, "--shard", "2/3") == 0
    with pytest.raises(UsageError, match=r"different numbers of shards"):
        merge_shards(out, [f0, thirds])
    assert not out.exists()  # refused before anything was written


def test_unfinished_shard_is_named_and_allow_missing_merges_the_rest(scene, tmp_path, capsys):
    unfinished = _shard_copy(scene, tmp_path, "features_1.h5")
    with h5py.File(unfinished, "r+") as f:  # its job was stopped before this image
        lost = sorted(k for k in f if not k.startswith("."))[-1]
        del f[lost]
    shards = [scene / "features_0.h5", unfinished]
    assert run("merge", tmp_path / "out.h5", *shards) == 1
    assert f"lacks 1 of its 3 items: {lost!r}" in capsys.readouterr().err
    assert not (tmp_path / "out.h5").exists()
    report = merge_shards(tmp_path / "out.h5", shards, allow_missing=True, progress=False)
    assert (report.copied, report.missing) == (4, [lost])
    # the shard job resumes (only the lost image), then the merge completes
    assert run("extract", scene / "images", unfinished, *SIFT, "--shard", "1/2") == 0
    assert "extracted       1" in capsys.readouterr().out
    report = merge_shards(tmp_path / "out.h5", shards, progress=False)
    assert (report.copied, report.already, report.missing) == (1, 4, [])
    assert contents(tmp_path / "out.h5") == contents(scene / "full_features.h5")


def test_interrupted_merge_resumes(scene, tmp_path, monkeypatch):
    from matchlab.store import MatchStore

    copy, copied = MatchStore.copy_group, []

    def interrupted(target, group):
        if len(copied) == 4:
            raise KeyboardInterrupt
        copied.append(group.name)
        return copy(target, group)

    monkeypatch.setattr(MatchStore, "copy_group", interrupted)
    out = tmp_path / "matches.h5"
    shards = [scene / "matches_0.h5", scene / "matches_1.h5"]
    with pytest.raises(KeyboardInterrupt):
        merge_shards(out, shards, progress=False)
    monkeypatch.setattr(MatchStore, "copy_group", copy)
    report = merge_shards(out, shards, progress=False)
    assert (report.already, report.copied) == (4, 6)
    assert contents(out) == contents(scene / "full_matches.h5")


def test_output_of_another_model_and_shard_files_are_protected(scene, tmp_path, capsys):
    images, f0, f1 = scene / "images", scene / "features_0.h5", scene / "features_1.h5"
    other = tmp_path / "other.h5"
    assert run("extract", images, other, *SIFT[:-2], "--max-keypoints", "32") == 0
    with pytest.raises(OutputMismatchError, match=r"made otherwise than the shards' \(its "
                                                  r"records vs theirs: matchlab_extractor.conf."
                                                  r"max_keypoints: 32 vs 96\)"):
        merge_shards(other, [f0, f1])
    with pytest.raises(UsageError, match=r"one of the shards"):
        merge_shards(f0, [f0, f1])
    capsys.readouterr()
    shard = _shard_copy(scene, tmp_path, "features_0.h5")
    assert run("extract", images, shard, *SIFT) == 1  # all images into a shard file
    assert "was written with --shard; resume it with --shard 0/2" in capsys.readouterr().err
    assert run("extract", images, shard, *SIFT, "--shard", "1/2") == 1  # another shard
    assert "is not what this run writes: features shard 1/2" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("2/2", r"I counts from 0, so the shards of 2 are 0/2 \.\.\. 1/2"),
    ("-1/2", r"I counts from 0"), ("0/0", r"N must be at least 1"),
    ("1", r"expected I/N"), ("a/b", r"expected I/N"), ("", r"expected I/N")])
def test_bad_shard_options(text, message):
    with pytest.raises(UsageError, match=message):
        parse_shard(text)


def test_split_is_contiguous_balanced_and_complete():
    items = list(range(10))
    blocks = [split(items, Shard(i, 4)) for i in range(4)]
    assert blocks == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert [split([1, 2], Shard(i, 3)) for i in range(3)] == [[], [1], [2]]
    assert parse_shard(" 3/4 ") == Shard(3, 4) and str(Shard(3, 4)) == "3/4"
    assert np.concatenate(blocks).tolist() == items


def test_more_shards_than_images_and_the_help(scene, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in (scene / "images").iterdir())[:2]:
        shutil.copy(scene / "images" / name, images / name)
    shards = [tmp_path / f"features_{i}.h5" for i in range(3)]
    for i, shard in enumerate(shards):
        assert run("extract", images, shard, *SIFT, "--shard", f"{i}/3") == 0  # 0/3: empty
    assert run("merge", tmp_path / "merged.h5", *shards) == 0
    merged = contents(tmp_path / "merged.h5")
    assert merged == {k: v for k, v in contents(scene / "full_features.h5").items()
                      if k == "/" or k.split("/")[0] in set(p.name for p in images.iterdir())}
    assert run("pairs", tmp_path / "p.txt", "--image-dir", images, "--shard", "0/2") == 1
    assert "give --image-dir, a --descriptors file of its own" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("match", "--help")
    assert "I counts from 0" in " ".join(capsys.readouterr().out.split())  # any wrapping
