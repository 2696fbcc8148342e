"""Matching under 90-degree rotations, for any extractor / matcher.

``rotate_features`` maps features to the frame of the image rotated by a multiple of 90
degrees; ``match_rotated_images`` re-extracts features from rotated copies of image 1 and
keeps the rotation with the most matches.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from ..types import Features, Matches

ANGLES = (0, 90, 180, 270)
# 2x2 rotation of the LAF axes for each clockwise (on screen) angle, image y pointing down
_ROT = {90: ((0.0, -1.0), (1.0, 0.0)), 180: ((-1.0, 0.0), (0.0, -1.0)), 270: ((0.0, 1.0), (-1.0, 0.0))}


def rotate_features(f: Features, angle: int) -> Features:
    """The features of the image rotated by ``angle`` degrees clockwise (on screen), angle in
    {0, 90, 180, 270}: keypoints [N, 2] (pixels, pixel-centre convention), image size (W, H)
    and LAFs [N, 2, 3]. Descriptors and scores are unchanged (the keypoints keep their order)."""
    angle = int(angle) % 360
    if angle == 0:
        return f
    if angle not in _ROT:
        raise ConfigError(f"rotations must be multiples of 90 degrees, got {angle}")
    w, h = f.image_size
    x, y = f.keypoints[:, 0], f.keypoints[:, 1]
    if angle == 90:
        kp, size = torch.stack([(h - 1) - y, x], -1), (h, w)
    elif angle == 180:
        kp, size = torch.stack([(w - 1) - x, (h - 1) - y], -1), (w, h)
    else:
        kp, size = torch.stack([y, (w - 1) - x], -1), (h, w)
    lafs = None
    if f.lafs is not None:
        r = f.lafs.new_tensor(_ROT[angle])
        lafs = torch.cat([r @ f.lafs[:, :, :2], kp[:, :, None]], -1)
    return Features(kp, f.descriptors, f.scores, size, lafs)


def match_rotated_images(extractor, matcher, image0, image1, rotations: Sequence[int] = ANGLES
                         ) -> tuple[Features, Features, Matches]:
    """Rotation robustness for descriptors that are not rotation invariant: image 1 is
    rotated by each angle (degrees, clockwise), features are extracted from each rotated
    copy and matched against image 0 (in one ``match_batch`` when the matcher has it,
    sharing image 0's work), and the rotation with the most matches is kept. Returns
    (feats0, feats1, matches) with feats1's keypoints and LAFs mapped back to the frame of
    the unrotated image 1; ``matches.extras["rotation"]`` is the kept angle and
    ``matches.extras["matches_per_rotation"]`` the match count of each angle."""
    from ..images import to_tensor

    angles = [int(r) % 360 for r in rotations]
    if not angles or any(r not in ANGLES for r in angles):
        raise ConfigError(f"rotations must be multiples of 90 degrees, got {list(rotations)}")
    feats0 = extractor(image0)
    img1 = to_tensor(image1, grayscale=False)
    feats1 = [extractor(torch.rot90(img1, -r // 90, dims=(1, 2))) for r in angles]  # k < 0: clockwise
    pairs = [(feats0, f) for f in feats1]
    results = matcher.match_batch(pairs)
    best = max(range(len(angles)), key=lambda i: (len(results[i]), -i))
    matches = results[best]
    matches.extras["rotation"] = angles[best]
    matches.extras["matches_per_rotation"] = {a: len(m) for a, m in zip(angles, results)}
    return feats0, rotate_features(feats1[best], (360 - angles[best]) % 360), matches
