"""SuperPoint (DeTone, Malisiewicz, Rabinovich, CVPR-W 2018), our implementation.

Written from the description of Magic Leap's inference model (SuperGluePretrainedNetwork,
`models/superpoint.py`); the layer names follow `superpoint_v1.pth`, which loads unchanged and
strictly. Those weights are under Magic Leap's non-commercial research license.

Pipeline for a batch [B, 1, H, W] of grayscale images in [0, 1]:
  shared VGG encoder (stride 8) -> detector head: 65-way softmax per 8x8 cell, dustbin dropped,
  depth-to-space to [B, 8h, 8w] -> non-maximum suppression -> scores > detection_threshold ->
  drop points within remove_borders px of the map's edge -> best max_keypoints per image;
  descriptor head: 256-d, L2-normalised, sampled bilinearly at the keypoints, L2-normalised again.
With precision="bfloat16" only the convolutions run in bfloat16; the softmax, the score map,
NMS, thresholds and descriptor sampling / normalisation are float32.
Keypoints are integer pixel indices of the score map, i.e. pixel centres (matchlab's convention).
(8h, 8w) is the image size rounded down to multiples of 8, as in the reference.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..precision import autocast
from ..registry import ConfigError
from ..weights import load_weights_into
from .base import Extractor

CELL = 8  # the encoder's stride: one detector / descriptor cell is CELL x CELL pixels


def max_filter(x: Tensor, radius: int) -> Tensor:
    """The maximum of each (2r+1) x (2r+1) window of x [B, H, W], same size (outside counts
    as -inf): F.max_pool2d(x[:, None], 2r+1, 1, r)[:, 0], exactly.

    Separable, and each 1-D pass takes the maximum of shifted copies with doubling spans
    (4 element-wise maxima for r = 4): vectorised, where max_pool2d on one channel runs a
    scalar loop on one thread (~10x slower on a 1024 x 768 map).
    """
    k = 2 * radius + 1
    for dim in (-1, -2):
        pad = (radius, radius) if dim == -1 else (0, 0, radius, radius)
        x = F.pad(x, pad, value=float("-inf"))
        span = 1  # x[i] is the maximum of the span original values from i on
        while span < k:
            step = min(span, k - span)
            n = x.shape[dim] - step
            x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, step, n))
            span += step
    return x


def simple_nms(scores: Tensor, radius: int) -> Tensor:
    """Scores [B, H, W] with every point that is not a local maximum set to 0.

    A point survives if it equals the maximum of its (2r+1)^2 window; two more rounds then
    re-admit points that are maxima once the windows of the points already kept are zeroed
    (SuperPoint's reference NMS, vectorised over the batch).
    """
    if radius <= 0:
        return scores
    zeros = torch.zeros_like(scores)
    keep = scores == max_filter(scores, radius)
    for _ in range(2):
        suppressed = max_filter(keep.to(scores.dtype), radius) > 0
        rest = torch.where(suppressed, zeros, scores)
        keep = keep | ((rest == max_filter(rest, radius)) & ~suppressed)
    return torch.where(keep, scores, zeros)


def sample_descriptors(keypoints: Tensor, descriptors: Tensor, cell: int = CELL) -> Tensor:
    """Descriptors [B, D, K] at keypoints [B, K, 2] (pixels) from a dense map [B, D, h, w].

    The normalisation follows the reference exactly (including its slightly-off denominator
    w*s - s/2 - 0.5, which the pretrained descriptors were evaluated with), then the bilinear
    samples are L2-normalised.
    """
    b, d, h, w = descriptors.shape
    grid = keypoints - cell / 2 + 0.5
    grid = grid / grid.new_tensor([w * cell - cell / 2 - 0.5, h * cell - cell / 2 - 0.5])
    grid = grid * 2 - 1
    sampled = F.grid_sample(descriptors, grid.view(b, 1, -1, 2), mode="bilinear",
                            align_corners=True)
    return F.normalize(sampled.reshape(b, d, -1), p=2, dim=1)


class SuperPoint(Extractor):
    """SuperPoint keypoints and 256-d descriptors on grayscale images.

    Options: nms_radius (px, 0 disables NMS), detection_threshold (on the softmax score),
    remove_borders (px), weights (a registry name or the path of a checkpoint in the same
    layout; None leaves the network randomly initialised), plus the base's resize and
    max_keypoints.
    """

    default_conf = {
        "nms_radius": 4,
        "detection_threshold": 0.005,
        "remove_borders": 4,
        "weights": "superpoint_v1.pth",
    }
    grayscale = True
    precisions = ("float32", "bfloat16")

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        for key in ("nms_radius", "remove_borders"):
            if int(self.conf[key]) < 0:
                raise ConfigError(f"SuperPoint: {key} must be >= 0, got {self.conf[key]}")
        max_kp = self.conf["max_keypoints"]
        if max_kp is not None and max_kp < 0:
            raise ConfigError(f"SuperPoint: max_keypoints must be >= 0 or None, got {max_kp}")
        c1, c2, c3, c4, c5, dim = 64, 64, 128, 128, 256, 256

        def conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2)

        self.conv1a, self.conv1b = conv(1, c1), conv(c1, c1)
        self.conv2a, self.conv2b = conv(c1, c2), conv(c2, c2)
        self.conv3a, self.conv3b = conv(c2, c3), conv(c3, c3)
        self.conv4a, self.conv4b = conv(c3, c4), conv(c4, c4)
        self.convPa, self.convPb = conv(c4, c5), conv(c5, CELL * CELL + 1, k=1)
        self.convDa, self.convDb = conv(c4, c5), conv(c5, dim, k=1)
        if self.conf["weights"] is not None:
            load_weights_into(self, self.conf["weights"])
        # oneDNN's convolutions run ~1.4x faster on CPU with channels-last weights (measured on
        # 1024x768; outputs differ by ~1e-6); the values and the state_dict keys are unchanged.
        self.to(memory_format=torch.channels_last)

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Score map [B, 8h, 8w] in [0, 1] and L2-normalised descriptor map [B, 256, h, w],
        both float32 (the convolutions run in `compute_dtype()`)."""
        with autocast(images.device, self.compute_dtype()):
            # in-place ReLUs: a fresh 190 MB map per ReLU at full resolution cost ~0.1 s
            x = F.relu_(self.conv1b(F.relu_(self.conv1a(images))))
            x = F.relu_(self.conv2b(F.relu_(self.conv2a(F.max_pool2d(x, 2)))))
            x = F.relu_(self.conv3b(F.relu_(self.conv3a(F.max_pool2d(x, 2)))))
            x = F.relu_(self.conv4b(F.relu_(self.conv4a(F.max_pool2d(x, 2)))))
            logits = self.convPb(F.relu_(self.convPa(x)))
            descriptors = self.convDb(F.relu_(self.convDa(x)))
        scores = F.pixel_shuffle(logits.float().softmax(1)[:, :-1], CELL)[:, 0]  # 8r+c -> (r, c)
        return scores, F.normalize(descriptors.float(), p=2, dim=1)

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        b, _, height, width = images.shape
        if min(height, width) < CELL:  # the encoder needs at least one 8x8 cell
            empty = images.new_zeros((0, 2))
            return [{"keypoints": empty, "descriptors": images.new_zeros((0, 256)),
                     "scores": images.new_zeros(0)} for _ in range(b)]
        scores, dense = self.dense(images)
        scores = simple_nms(scores, int(self.conf["nms_radius"]))
        h, w = scores.shape[-2:]
        valid = scores > self.conf["detection_threshold"]
        border = int(self.conf["remove_borders"])
        if border > 0:
            inside_y = torch.zeros(h, dtype=torch.bool, device=scores.device)
            inside_x = torch.zeros(w, dtype=torch.bool, device=scores.device)
            inside_y[border:h - border] = True
            inside_x[border:w - border] = True
            valid &= inside_y[:, None] & inside_x[None, :]
        # One top-k over the flattened maps picks every image's best points at once, best first;
        # invalid points score -1 (scores are >= 0) and are cut per image below.
        counts = valid.flatten(1).sum(1)
        k = int(counts.max())
        if self.conf["max_keypoints"] is not None:
            k = min(k, int(self.conf["max_keypoints"]))
        best = scores.masked_fill(~valid, -1).flatten(1).topk(k, dim=1)
        keypoints = torch.stack([best.indices % w, best.indices // w], -1).to(scores.dtype)
        descriptors = sample_descriptors(keypoints, dense).transpose(1, 2)
        n = counts.clamp(max=k).tolist()
        return [{"keypoints": keypoints[i, :n[i]], "descriptors": descriptors[i, :n[i]],
                 "scores": best.values[i, :n[i]]} for i in range(b)]
