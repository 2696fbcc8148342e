"""SIFT (Lowe, IJCV 2004) through OpenCV's cv2.SIFT, with scale and orientation kept as LAFs.

OpenCV keypoints -> matchlab (all in pixels of the image OpenCV saw; the base class then maps
them to the original image):
- keypoint = kp.pt. SIFT is created with enable_precise_upscale=True, so the doubled first
  octave maps pixel x to 2x and kp.pt follows the pixel-centre convention; without it every
  keypoint is shifted by +0.25 px in x and y (measured: a mirrored image gives keypoints 0.5 px
  apart after mirroring back).
- LAF scale = kp.size / 2. OpenCV's kp.size is the diameter 2 * sigma of the detection, so the
  scale is the DoG sigma (COLMAP's keypoint scale). kornia's SIFT frames use 6 * sigma
  (= 3 * kp.size); LightGlue's OpenCV SIFT passes kp.size itself as "scales".
- LAF orientation ori = radians(kp.angle): kp.angle is in degrees in [0, 360), measured from +x
  towards +y of the y-down image, i.e. clockwise on screen (rotating the image 90 degrees
  clockwise adds 90 to it). The LAF is [[s cos, -s sin, x], [s sin, s cos, y]] (see
  matchlab.geometry.laf); kornia's get_laf_orientation reads it as -kp.angle (mod 360).
  `scale_ori_from_lafs(lafs)` gives back (kp.size / 2, radians(kp.angle)) up to 2 pi.
- scores = kp.response; descriptors = OpenCV's 128-d SIFT, L2-normalised, or RootSIFT
  (L1-normalise, square root: also unit L2 norm).
A location with several dominant orientations gives several keypoints (one per orientation),
as in OpenCV; upright=True merges them into one keypoint with orientation 0.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.laf import lafs_from_scale_ori
from ..registry import ConfigError
from .base import Extractor, top_k


class SIFT(Extractor):
    """Options: max_keypoints (best responses kept; default 4096), rootsift, detection_threshold
    (OpenCV's contrastThreshold, which OpenCV divides by num_octave_layers; OpenCV's own default
    is 0.04, ours 0.0066667 follows LightGlue's SIFT), edge_threshold, num_octave_layers, upright
    (no orientation: one keypoint per location, angle 0), plus resize. OpenCV always starts
    from the image upsampled by 2 (COLMAP's first_octave = -1); that is not configurable.
    """

    default_conf = {
        "max_keypoints": 4096,
        "rootsift": True,
        "detection_threshold": 0.0066667,
        "edge_threshold": 10,
        "num_octave_layers": 3,
        "upright": False,
    }
    grayscale = True

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        max_kp = self.conf["max_keypoints"]
        if max_kp is not None and max_kp < 0:
            raise ConfigError(f"SIFT: max_keypoints must be >= 0 or None, got {max_kp}")
        # Upright mode merges the orientations of a location after detection, so OpenCV must
        # not cut the list before that.
        nfeatures = 0 if max_kp is None or self.conf["upright"] else int(max_kp)
        self.sift = cv2.SIFT_create(
            nfeatures=nfeatures, nOctaveLayers=int(self.conf["num_octave_layers"]),
            contrastThreshold=float(self.conf["detection_threshold"]),
            edgeThreshold=float(self.conf["edge_threshold"]), enable_precise_upscale=True)

    def _sift(self, image: np.ndarray) -> tuple[list, np.ndarray | None]:
        """OpenCV keypoints and raw descriptors of one uint8 image."""
        if not self.conf["upright"]:
            return self.sift.detectAndCompute(image, None)
        unique: dict[tuple[float, float, float], cv2.KeyPoint] = {}
        for kp in self.sift.detect(image, None):  # orientation copies share pt, size, response
            unique.setdefault((kp.pt[0], kp.pt[1], kp.size), kp)
        kps = [cv2.KeyPoint(kp.pt[0], kp.pt[1], kp.size, 0.0, kp.response, kp.octave,
                            kp.class_id) for kp in unique.values()]
        if self.conf["max_keypoints"] is not None:
            kps = sorted(kps, key=lambda kp: -kp.response)[:self.conf["max_keypoints"]]
        return self.sift.compute(image, kps) if kps else (kps, None)

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        arrays = (images[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        out = []
        for array in arrays:
            kps, desc = self._sift(array)
            n = len(kps)
            kp = torch.tensor([(*k.pt, k.size, k.angle, k.response) for k in kps],
                              dtype=torch.float32).view(n, 5)
            desc = torch.from_numpy(desc).float() if n else torch.zeros(0, 128)
            order = top_k(kp[:, 4], self.conf["max_keypoints"])
            kp, desc = kp[order], desc[order]
            if self.conf["rootsift"]:
                desc = F.normalize(desc, p=1, dim=1).clamp(min=1e-12).sqrt()
            else:
                desc = F.normalize(desc, p=2, dim=1)
            out.append({"keypoints": kp[:, :2], "descriptors": desc, "scores": kp[:, 4],
                        "lafs": lafs_from_scale_ori(kp[:, :2], kp[:, 2] / 2,
                                                    torch.deg2rad(kp[:, 3]))})
        return out
