"""Acceptance: real weights on real images, scored against ground-truth homographies.

oxford_graf img1 -> img2 / img3 (viewpoint change of about 20 / 40 degrees), long side 640,
1024 keypoints, mutual nearest neighbour. Measured on 2026-11-22 (CPU, torch 2.13):
  SuperPoint: 1->2 precision@3px 0.80 (596 matches), 1->3 0.64 (511 matches)
  DISK:       1->2 0.82 (487 matches),               1->3 0.64 (492 matches)
The floors sit about 0.1 below the measurement: enough slack for other torch/OpenCV builds
and resampling details, while a broken detector, descriptor, weight load or
resize-to-original mapping (precision near 0) fails at once.
"""
from __future__ import annotations

import numpy as np
import pytest

from matchlab import load_extractor, load_matcher
from matchlab.geometry.primitives.homography import reprojection_errors

FLOORS = {("superpoint", 2): 0.70, ("superpoint", 3): 0.52,
          ("disk", 2): 0.72, ("disk", 3): 0.52}


@pytest.fixture(scope="module")
def graf(datasets_root):
    return datasets_root / "oxford_graf"


@pytest.mark.slow
@pytest.mark.parametrize("features", ["superpoint", "disk"])
def test_precision_on_graf_with_mutual_nn(graf, features):
    extractor = load_extractor(features, resize=640, max_keypoints=1024)
    matcher = load_matcher("nn")
    feats0 = extractor(graf / "img1.png")
    for target in (2, 3):
        if (features, target) not in FLOORS:
            continue
        feats1 = extractor(graf / f"img{target}.png")
        idx = matcher(feats0, feats1).pairs().numpy()
        H = np.loadtxt(graf / f"H1to{target}p")
        errors = reprojection_errors(H, feats0.keypoints.numpy()[idx[:, 0]],
                                     feats1.keypoints.numpy()[idx[:, 1]])
        precision = (errors < 3).mean()
        assert len(idx) > 300, f"{features} 1->{target}: only {len(idx)} matches"
        assert precision >= FLOORS[(features, target)], f"{features} 1->{target}: {precision:.3f}"
        # correct matches are sub-pixel-ish: a half-pixel convention slip would show here
        assert np.median(errors[errors < 3]) < 1.2
