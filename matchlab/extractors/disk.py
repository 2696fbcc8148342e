"""DISK (Tyszkiewicz, Fua, Trulls, NeurIPS 2020) through kornia.feature.DISK.

Weights come from our resolver (`disk_depth-save.pth`, the authors' "depth" checkpoint,
Apache-2.0), never from kornia's downloader. Input is RGB in [0, 1]. Keypoints are the strict
local maxima of the heatmap in an nms_window_size window (integer pixels, i.e. pixel centres),
scores the heatmap values there, descriptors 128-d and L2-normalised; returned best first.
With precision="bfloat16" only the U-Net runs in bfloat16; its heatmap and descriptors are
cast to float32 before NMS, thresholds and top-k (kornia's own steps, called here).
"""
from __future__ import annotations

from typing import Any

import kornia.feature as KF
import torch.nn.functional as F
from kornia.feature.disk.detector import heatmap_to_keypoints
from torch import Tensor

from ..precision import autocast
from ..weights import load_weights_into
from .base import Extractor, top_k


class DISK(Extractor):
    """Options: nms_window_size (odd, px), detection_threshold (heatmap values strictly above
    it are kept), pad_if_not_divisible (zero-pad to multiples of 16 at the bottom/right instead
    of failing; no keypoint lands in the padding), weights (registry name or a path to a
    checkpoint `{"extractor": state_dict}` or a bare state dict), plus resize and max_keypoints.
    """

    default_conf = {
        "nms_window_size": 5,
        "detection_threshold": 0.0,
        "pad_if_not_divisible": True,
        "weights": "disk_depth-save.pth",
    }
    grayscale = False
    precisions = ("float32", "bfloat16")

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        self.model = KF.DISK(desc_dim=128)
        load_weights_into(self.model, self.conf["weights"],
                          convert=lambda checkpoint: checkpoint.get("extractor", checkpoint))
        self.eval()

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Heatmap [B, 1, H, W] and descriptor map [B, 128, H, W] (float32) of images
        [B, 3, H, W]; the U-Net runs in `compute_dtype()`. H, W not multiples of 16 are
        zero-padded at the bottom / right if pad_if_not_divisible (and cropped back)."""
        h, w = images.shape[-2:]
        if self.conf["pad_if_not_divisible"]:
            images = F.pad(images, (0, -w % 16, 0, -h % 16), value=0.0)
        with autocast(images.device, self.compute_dtype()):
            heatmaps, descriptors = self.model.heatmap_and_dense_descriptors(images)
        return heatmaps[..., :h, :w].float(), descriptors[..., :h, :w].float()

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        heatmaps, descriptors = self.dense(images)
        keypoints = heatmap_to_keypoints(heatmaps, n=self.conf["max_keypoints"],
                                         window_size=self.conf["nms_window_size"],
                                         score_threshold=self.conf["detection_threshold"])
        out = []
        for kp, desc in zip(keypoints, descriptors):  # raster order: sort best first
            f = kp.merge_with_descriptors(desc)
            order = top_k(f.detection_scores, None)
            out.append({"keypoints": f.keypoints[order], "descriptors": f.descriptors[order],
                        "scores": f.detection_scores[order]})
        return out
