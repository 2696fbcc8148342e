"""matches.h5 remembers which keypoints it matched: matches of other features are refused."""
from __future__ import annotations

import pytest

from matchlab.errors import OutputMismatchError
from matchlab.pipeline import extract_features, match_pairs, model_record
from matchlab.registry import load_extractor, load_matcher
from matchlab.store import FeatureStore, MatchStore

NAMES = ["02928139_3448003521.jpg", "03903474_1471484089.jpg", "10265353_3838484249.jpg"]
PAIRS = [(NAMES[0], NAMES[1]), (NAMES[1], NAMES[2])]


@pytest.fixture(scope="module")
def images(datasets_root):
    return datasets_root / "hloc_sacre_coeur" / "mapping"


def extract(images, path, name, resize, record=True):
    extractor = load_extractor(name, resize=resize, max_keypoints=512)
    report = extract_features(images, NAMES, path, extractor, progress=False,
                              record=model_record(name, extractor) if record else None)
    assert report.done == len(NAMES)


def match(features, matches):
    matcher = load_matcher("nn")
    return match_pairs(PAIRS, features, matches, matcher, progress=False,
                       record=model_record("nn", matcher))


def test_matches_of_sift_are_not_reused_for_superpoint(images, tmp_path):
    features, matches = tmp_path / "features.h5", tmp_path / "matches.h5"
    extract(images, features, "sift", 640)
    assert match(features, matches).done == 2
    assert match(features, matches).already == 2  # same features: reused
    features.unlink()  # features.h5 itself refuses another extractor: made anew
    extract(images, features, "superpoint", 640)
    with pytest.raises(OutputMismatchError) as info:
        match(features, matches)
    message = str(info.value)
    assert str(matches) in message and "sift" in message and "superpoint" in message
    with MatchStore(matches, "r") as store:  # nothing was written
        assert len(store.file) == 1 + 1  # groups of the two first images of the pairs


def test_matches_of_another_resize_are_refused_per_image(images, tmp_path):
    """Without extractor records (features written by another tool), the keypoints digest
    kept with each pair still notices that an image's keypoints changed."""
    features, matches = tmp_path / "features.h5", tmp_path / "matches.h5"
    extract(images, features, "sift", 640, record=False)
    assert match(features, matches).done == 2
    with FeatureStore(features, "r") as store:
        before = {n: store.num_keypoints(n) for n in NAMES}
    with FeatureStore(features) as store:  # one image extracted again at another size
        store.write(NAMES[2], load_extractor("sift", resize=320, max_keypoints=512)(
            images / NAMES[2]), overwrite=True)
        after = store.num_keypoints(NAMES[2])
    with pytest.raises(OutputMismatchError) as info:
        match(features, matches)
    message = str(info.value)
    assert str(matches) in message and repr(NAMES[2]) in message
    assert f"had {before[NAMES[2]]} keypoints then" in message and f"has {after} now" in message
    # pairs not involving the changed image are still accepted
    assert match_pairs(PAIRS[:1], features, matches, load_matcher("nn"),
                       progress=False).already == 1
