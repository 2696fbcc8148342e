"""Image pairs: generators, pairs files (names with spaces), de-duplication, specs."""
from __future__ import annotations

import os

import pytest

from matchlab.retrieval.pairs import (PairsFileError, dedupe_pairs, exhaustive_pairs,
                                      parse_pairs_spec, read_pairs_file, sequential_pairs,
                                      spec_part_pairs, write_pairs_file)

NAMES = [f"frame_{i:03d}.jpg" for i in range(7)]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 12])
def test_exhaustive_count_and_uniqueness(n):
    names = NAMES[:n] if n <= len(NAMES) else [f"{i}.png" for i in range(n)]
    pairs = exhaustive_pairs(names)
    assert len(pairs) == n * (n - 1) // 2
    assert len({frozenset(p) for p in pairs}) == len(pairs)
    assert all(a != b for a, b in pairs)
    # list order: each pair (names[i], names[j]) has i < j
    index = {name: i for i, name in enumerate(names)}
    assert all(index[a] < index[b] for a, b in pairs)


def test_sequential_window():
    pairs = sequential_pairs(NAMES, 2)
    assert pairs[:3] == [(NAMES[0], NAMES[1]), (NAMES[0], NAMES[2]), (NAMES[1], NAMES[2])]
    assert len(pairs) == 2 * (len(NAMES) - 2) + 1  # the last frame pairs with nothing
    assert all(0 < NAMES.index(b) - NAMES.index(a) <= 2 for a, b in pairs)
    assert sequential_pairs(NAMES, 1) == list(zip(NAMES[:-1], NAMES[1:]))
    # a window past the end is exhaustive
    assert sorted(sequential_pairs(NAMES, 100)) == sorted(exhaustive_pairs(NAMES))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="window"):
            sequential_pairs(NAMES, bad)


def test_generators_reject_bad_names():
    with pytest.raises(ValueError, match="twice"):
        exhaustive_pairs(["a.jpg", "b.jpg", "a.jpg"])
    with pytest.raises(TypeError):
        exhaustive_pairs("a.jpg")


def test_dedupe_either_order_and_self_pairs():
    pairs = [("a", "b"), ("b", "a"), ("a", "a"), ("c", "a"), ("a", "c"), ("a", "b"), ("b", "c")]
    assert dedupe_pairs(pairs) == [("a", "b"), ("c", "a"), ("b", "c")]
    assert dedupe_pairs([["x", "y"], ("y", "x")]) == [("x", "y")]  # lists are fine
    with pytest.raises(ValueError):
        dedupe_pairs([("a", "b", "c")])


def test_file_round_trip_hloc_format(tmp_path):
    pairs = exhaustive_pairs(["db/1.jpg", "db/2.jpg", "query/night 1.jpg"])[:1]
    path = write_pairs_file(tmp_path / "pairs.txt", pairs)
    # ordinary names: byte-identical to hloc's "name0 name1\n"
    assert path.read_text() == "db/1.jpg db/2.jpg\n"
    assert read_pairs_file(path) == pairs


def test_file_round_trip_with_spaces(tmp_path):
    names = ["my photos/IMG 0001.JPG", "my photos/IMG 0002.JPG", "plain.jpg",
             "trailing space .png", "ünïcode/ß 1.jpg", "#hash.jpg"]
    pairs = exhaustive_pairs(names)
    path = write_pairs_file(tmp_path / "sub" / "pairs.txt", pairs)
    back = read_pairs_file(path)
    # a pair whose first name starts with '#' is written reversed (it would read as a comment)
    assert dedupe_pairs(back) == back and len(back) == len(pairs)
    assert {frozenset(p) for p in back} == {frozenset(p) for p in pairs}
    assert [p for p in back if "#hash.jpg" not in p] == [p for p in pairs if "#hash.jpg" not in p]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert "my photos/IMG 0001.JPG\tmy photos/IMG 0002.JPG" in lines
    assert all(not line.startswith("#") for line in lines)
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temp file


def test_read_tolerates_blank_comment_and_crlf(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_bytes(b"# comment\n\n   # indented comment\na.jpg   b.jpg\r\n"
                     b"  c.jpg\td.jpg\n\n")
    # the TAB form keeps names verbatim (leading spaces included)
    assert read_pairs_file(path) == [("a.jpg", "b.jpg"), ("  c.jpg", "d.jpg")]


@pytest.mark.parametrize("line, message", [
    ("a.jpg", "found 1"),
    ("a.jpg b.jpg c.jpg", "TAB"),
    ("a b\tc\td", "exactly one TAB"),
    ("a.jpg\t ", "empty image name"),
])
def test_malformed_line_names_line_number(tmp_path, line, message):
    path = tmp_path / "pairs.txt"
    path.write_text(f"a.jpg b.jpg\n\n{line}\nc.jpg d.jpg\n")
    with pytest.raises(PairsFileError, match=message) as info:
        read_pairs_file(path)
    assert f"{path} line 3:" in str(info.value)


def test_write_rejects_unrepresentable_names(tmp_path):
    for pair in [("a\tb.jpg", "c.jpg"), ("a.jpg", "b\n.jpg"), ("#a", "#b"), ("a.jpg", "")]:
        with pytest.raises(ValueError):
            write_pairs_file(tmp_path / "p.txt", [pair])
    with pytest.raises(FileNotFoundError):
        read_pairs_file(tmp_path / "missing.txt")


def test_parse_pairs_spec(tmp_path):
    assert parse_pairs_spec("exhaustive") == [("exhaustive", None)]
    assert parse_pairs_spec(" Sequential:3 + retrieval:5 ") == [("sequential", 3), ("retrieval", 5)]
    assert parse_pairs_spec("file:a+b:c.txt") == [("file", "a+b:c.txt")]
    for bad in ("sequential", "sequential:0", "sequential:x", "retrieval", "retrieval:0", "file:",
                "exhaustive:3", "", "sequential:2+nearest:4"):
        with pytest.raises(PairsFileError, match="bad pairs spec"):
            parse_pairs_spec(bad)


def test_spec_part_pairs(tmp_path):
    assert spec_part_pairs("exhaustive", None, NAMES) == exhaustive_pairs(NAMES)
    assert spec_part_pairs("sequential", 3, NAMES) == sequential_pairs(NAMES, 3)
    folder = tmp_path / "with:colon"
    path = write_pairs_file(folder / "pairs.txt",
                            [(NAMES[0], NAMES[1]), (NAMES[1], NAMES[0]), (NAMES[2], NAMES[2])])
    [(kind, arg)] = parse_pairs_spec(f"file:{path}")
    assert spec_part_pairs(kind, arg, NAMES) == [(NAMES[0], NAMES[1])]
    write_pairs_file(folder / "bad.txt", [(NAMES[0], "unknown.jpg")])
    with pytest.raises(PairsFileError, match="unknown.jpg"):
        spec_part_pairs("file", str(folder / "bad.txt"), NAMES)
    with pytest.raises(PairsFileError, match="global descriptors"):
        spec_part_pairs("retrieval", 5, NAMES)


def test_unwritable_pairs_file_names_path_and_reason(tmp_path):
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(PairsFileError, match="cannot write pairs file .*dir.txt: Is a directory"):
        write_pairs_file(tmp_path / "dir.txt", [(NAMES[0], NAMES[1])])
    assert [p.name for p in tmp_path.iterdir()] == ["dir.txt"]  # no temporary file left
    # a folder without write permission: tests/cli/test_errors.py (as a user bound by them)
