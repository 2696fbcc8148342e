"""Local affine frames (LAFs): keypoint position, scale and orientation in one [..., 2, 3] tensor.

Layout (kornia's): a LAF is [A | c] = [[a11, a12, x], [a21, a22, y]] in pixels, where c = (x, y)
is the keypoint and the columns of A are the images of the patch's x and y axes.

Orientation convention used by matchlab (and by OpenCV, COLMAP and LightGlue's "oris"): an angle
`ori` in RADIANS, measured in the image frame (x right, y DOWN) from +x towards +y, i.e.
clockwise as seen on screen. For a similarity frame

    A = scale * R(ori),   R(ori) = [[cos ori, -sin ori], [sin ori, cos ori]],

so A's first column scale * (cos ori, sin ori) points along the keypoint's orientation.
kornia states the same frames with the opposite sign: its `laf_from_center_scale_ori(xy, s,
deg)` builds s * [[cos, sin], [-sin, cos]] of `deg`, and `get_laf_orientation` reads
atan2(a12, a11) in degrees, so kornia's angle is -degrees(ori); `get_laf_scale` equals our scale.

OpenCV keypoints (cv2.KeyPoint, see matchlab.extractors.sift): `kp.angle` is in degrees in
[0, 360), measured from +x towards +y in the y-down image (clockwise on screen; checked by
rotating an image 90 degrees clockwise, which adds 90 to the angles), so ori = radians(kp.angle).
"""
from __future__ import annotations

import torch
from torch import Tensor


def lafs_from_scale_ori(keypoints: Tensor, scales: Tensor, oris: Tensor) -> Tensor:
    """LAFs [..., 2, 3] = [scale * R(ori) | keypoint] from keypoints [..., 2], scales [...] (px)
    and orientations [...] (radians, clockwise on screen as OpenCV's angle; see module doc)."""
    if keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be [..., 2], got {tuple(keypoints.shape)}")
    scales = torch.as_tensor(scales, dtype=keypoints.dtype, device=keypoints.device)
    oris = torch.as_tensor(oris, dtype=keypoints.dtype, device=keypoints.device)
    cos, sin = torch.cos(oris) * scales, torch.sin(oris) * scales
    rows = (torch.stack([cos, -sin, keypoints[..., 0]], -1),
            torch.stack([sin, cos, keypoints[..., 1]], -1))
    return torch.stack(rows, -2)


def scale_ori_from_lafs(lafs: Tensor) -> tuple[Tensor, Tensor]:
    """(scales [...], oris [...]) of LAFs [..., 2, 3]: the inverse of `lafs_from_scale_ori`.

    scale = sqrt(|det A|) and ori = atan2(-a12, a11) in [-pi, pi]: exact for similarity frames;
    for a general A it is the rotation of kornia's split A = U R(ori) with a12 = 0 in U
    (`kornia.feature.make_upright`), so ori == -radians(kornia.feature.get_laf_orientation).
    """
    if tuple(lafs.shape[-2:]) != (2, 3):
        raise ValueError(f"lafs must be [..., 2, 3], got {tuple(lafs.shape)}")
    a11, a12 = lafs[..., 0, 0], lafs[..., 0, 1]
    a21, a22 = lafs[..., 1, 0], lafs[..., 1, 1]
    scales = (a11 * a22 - a12 * a21).abs().sqrt()
    oris = torch.atan2(-a12, a11)
    return scales, oris
