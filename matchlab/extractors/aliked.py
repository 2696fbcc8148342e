"""ALIKED (Zhao et al., IEEE TIM 2023) through kornia.feature.ALIKED.

Weights come from our resolver (`aliked-n16.pth` / `aliked-n32.pth`, BSD-3-Clause), never from
kornia's downloader. Input is RGB in [0, 1]. Keypoints are sub-pixel (soft-argmax around the
strict maxima of the score map, pixel-centre convention), descriptors 128-d and L2-normalised,
returned best score first. With precision="bfloat16" only the backbone runs in bfloat16; the
score and feature maps are cast to float32 before detection (NMS, threshold, soft-argmax
refinement) and descriptor sampling (kornia's own steps, called here).
"""
from __future__ import annotations

from typing import Any

import kornia.feature as KF
import torch
from torch import Tensor

from ..precision import autocast
from ..registry import ConfigError
from ..weights import WeightsError, load_weights_into
from .base import Extractor, top_k

MODELS = ("n16", "n32")
# A constant the model builds itself (the soft-argmax offsets); checkpoints do not carry it.
_BUILT_BUFFERS = {"dkd.hw_grid"}


class ALIKED(Extractor):
    """Options: model_name ('n16' or 'n32'), detection_threshold (score a maximum must exceed;
    an image with none above it keeps the maxima above its mean score; <= 0 keeps the
    max_keypoints best maxima), nms_radius (px), weights (None: `aliked-{model_name}.pth`, or a
    registry name / path of a state dict for that model), plus resize and max_keypoints.
    """

    default_conf = {
        "model_name": "n16",
        "detection_threshold": 0.2,
        "nms_radius": 2,
        "weights": None,
    }
    grayscale = False
    precisions = ("float32", "bfloat16")

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        name = self.conf["model_name"]
        if name not in MODELS:
            raise ConfigError(f"ALIKED: model_name must be one of {MODELS}, got {name!r}")
        max_kp = self.conf["max_keypoints"]
        self.model = KF.ALIKED(model_name=f"aliked-{name}",
                               max_num_keypoints=-1 if max_kp is None else max(int(max_kp), 1),
                               detection_threshold=self.conf["detection_threshold"],
                               nms_radius=self.conf["nms_radius"])
        weights = self.conf["weights"] or f"aliked-{name}.pth"
        missing, unexpected = load_weights_into(self.model, weights, strict=False)
        if unexpected or set(missing) - _BUILT_BUFFERS:
            raise WeightsError(f"{weights} does not fit ALIKED-{name}: missing "
                               f"{sorted(set(missing) - _BUILT_BUFFERS)}, unexpected {unexpected}")
        self.eval()  # BatchNorm must use its running statistics, also when built directly

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        with autocast(images.device, self.compute_dtype()):
            feature_map, score_map = self.model.extract_dense_map(images)
        keypoints, scores, _ = self.model.dkd(score_map.float())  # [-1, 1] coordinates
        descriptors, _ = self.model.desc_head(feature_map.float(), keypoints)
        h, w = images.shape[-2:]
        wh = torch.tensor([w - 1, h - 1], device=images.device, dtype=torch.float32)
        out = []
        for kp, desc, score in zip(keypoints, descriptors, scores):
            order = top_k(score, self.conf["max_keypoints"])
            out.append({"keypoints": wh * (kp[order] + 1) / 2.0, "descriptors": desc[order],
                        "scores": score[order]})
        return out
