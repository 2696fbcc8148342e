"""Matching under 90-degree rotations: rotate_features (frames of keypoints, LAFs, image
size) and match_rotated_images (re-extraction per rotation) on a real rotated image."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from matchlab import Features, load_extractor, load_matcher
from matchlab.errors import ConfigError
from matchlab.geometry.primitives.homography import reprojection_errors
from matchlab.geometry.laf import lafs_from_scale_ori, scale_ori_from_lafs
from matchlab.matchers.rotation import match_rotated_images, rotate_features


def test_rotate_features_roundtrip():
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(20, 2, generator=g) * torch.tensor([99.0, 59.0])
    lafs = lafs_from_scale_ori(kp, torch.rand(20, generator=g) + 1, torch.rand(20, generator=g))
    f = Features(kp, torch.randn(20, 128, generator=g), torch.rand(20, generator=g), (100, 60), lafs)
    r = rotate_features(f, 90)
    assert r.image_size == (60, 100)
    # pixel-centre convention: the top-left pixel centre goes to the top-right one
    corner = rotate_features(Features(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1), (100, 60)), 90)
    assert corner.keypoints.tolist() == [[59.0, 0.0]]
    s0, o0 = scale_ori_from_lafs(f.lafs)
    s1, o1 = scale_ori_from_lafs(r.lafs)
    assert torch.allclose(s0, s1, atol=1e-5)
    assert torch.allclose(torch.remainder(o1 - o0, 2 * math.pi), torch.full_like(o0, math.pi / 2), atol=1e-5)
    back = rotate_features(rotate_features(r, 180), 90)
    assert torch.allclose(back.keypoints, f.keypoints) and torch.allclose(back.lafs, f.lafs, atol=1e-5)
    assert rotate_features(f, 360) is f


def test_rotations_must_be_right_angles():
    f = Features(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1), (100, 60))
    with pytest.raises(ConfigError):
        rotate_features(f, 45)
    with pytest.raises(ConfigError):  # refused before any extraction
        match_rotated_images(None, None, "unused0.png", "unused1.png", rotations=[0, 45])


@pytest.mark.slow
def test_match_rotated_images_finds_a_90_degree_rotation(datasets_root, tmp_path):
    """On a real image rotated by 90 degrees clockwise, DISK + LightGlue re-extracted per
    rotation keeps the 270-degree rotation and its matches are correct in image 2's frame."""
    image = cv2.imread(str(datasets_root / "oxford_graf/img2.png"))
    cv2.imwrite(str(tmp_path / "graf2_cw.png"), cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))
    ext = load_extractor("disk", resize=640, max_keypoints=1024)
    matcher = load_matcher("lightglue", features="disk")
    g0, g1, mr = match_rotated_images(ext, matcher, datasets_root / "oxford_graf/img1.png",
                                      tmp_path / "graf2_cw.png")
    assert mr.extras["rotation"] == 270 and g1.image_size == (640, 800)
    idx = mr.pairs().numpy()
    p1 = g1.keypoints.numpy()[idx[:, 1]]                   # frame of the rotated file
    p1 = np.stack([p1[:, 1], image.shape[0] - 1 - p1[:, 0]], -1)  # back to img2's frame
    err = reprojection_errors(np.loadtxt(datasets_root / "oxford_graf/H1to2p"),
                              g0.keypoints.numpy()[idx[:, 0]], p1)
    assert len(idx) > 300 and (err < 3).mean() > 0.8
    without = mr.extras["matches_per_rotation"][0]
    assert len(idx) > 5 * without                          # plain matching fails at 90 degrees
