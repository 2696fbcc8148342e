"""DISK (Tyszkiewicz, Fua, Trulls, NeurIPS 2020) through kornia.feature.DISK.

Weights come from our resolver (`disk_depth-save.pth`, the authors' "depth" checkpoint,
Apache-2.0), never from kornia's downloader. Input is RGB in [0, 1]. Keypoints are the strict
local maxima of the heatmap in an nms_window_size window (integer pixels, i.e. pixel centres),
scores the heatmap values there, descriptors 128-d and L2-normalised; returned best first.
"""
from __future__ import annotations

from typing import Any

import kornia.feature as KF
from torch import Tensor

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

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        self.model = KF.DISK(desc_dim=128)
        load_weights_into(self.model, self.conf["weights"],
                          convert=lambda checkpoint: checkpoint.get("extractor", checkpoint))
        self.eval()

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        features = self.model(images, n=self.conf["max_keypoints"],
                              window_size=self.conf["nms_window_size"],
                              score_threshold=self.conf["detection_threshold"],
                              pad_if_not_divisible=self.conf["pad_if_not_divisible"])
        out = []
        for f in features:  # kornia lists them in raster order: sort best first
            order = top_k(f.detection_scores, None)
            out.append({"keypoints": f.keypoints[order], "descriptors": f.descriptors[order],
                        "scores": f.detection_scores[order]})
        return out
