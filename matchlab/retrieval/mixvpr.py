"""MixVPR (Ali-bey, Chaib-draa, Giguère, WACV 2023): global place descriptors from a ResNet-50
trunk and a feature-mixer aggregator. Our own implementation; it loads the official
checkpoints (the .ckpt files linked from github.com/amaralibey/MixVPR's README) unchanged.

    model = MixVPR(weights="resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt")
    g = model("photo.jpg")            # [4096], unit L2 norm
    G = model.extract_batch(paths)    # [B, 4096]

Architecture (shapes for one 320 x 320 RGB image, ImageNet-normalised):
  backbone.model: torchvision's ResNet-50 (v1.5: stride on the 3x3 conv) up to and including
                  layer3                                             -> [1024, 20, 20]
  aggregator:     flatten the spatial grid                           -> [1024, 400]
                  4 feature-mixer blocks on the 400-long rows: x + W2 ReLU(W1 LayerNorm(x))
                  channel_proj Linear(1024 -> d') over channels      -> [d', 400]
                  row_proj Linear(400 -> r, no bias) over rows       -> [d', r]
                  flatten, L2 normalise                              -> [d' r]
Released variants: 4096 (d'=1024, r=4), 512 (256, 2), 128 (64, 2). The 400 = 20 x 20 is part of
the Linear sizes, so the input is always resized to exactly 320 x 320 (aspect ratio is not
kept, as in the official code).

Checkpoint key layout (the official VPRModel's state dict, a plain dict of tensors):
  backbone.model.{conv1,bn1}.*, backbone.model.layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}.*,
  backbone.model.layer{1,2,3}.0.downsample.{0,1}.*   (torchvision's ResNet names)
  aggregator.mix.{0..3}.mix.0.{weight,bias}           LayerNorm(400)
  aggregator.mix.{0..3}.mix.{1,3}.{weight,bias}       Linear(400, 400), Linear(400, 400)
  aggregator.channel_proj.{weight,bias}               Linear(1024, d')
  aggregator.row_proj.weight                          Linear(400, r), no bias
A PyTorch-Lightning checkpoint ({"state_dict": ...}) is accepted too. The variant is read
from the checkpoint's shapes. Files are loaded with torch.load(weights_only=True).

License: the MixVPR repository has no license file: the weights are not
redistributed by matchlab; users download them from the authors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import ImageLike, resize_image, to_tensor
from ..registry import ConfigError, Configurable
from ..weights import WeightsError, load_checkpoint

__all__ = ["MixVPR", "MixVPRWeightsError", "VARIANTS", "CHECKPOINT_NAMES",
           "find_mixvpr_checkpoint", "WEIGHTS_ENV"]

# output dim -> (out_channels d', out_rows r)
VARIANTS: dict[int, tuple[int, int]] = {4096: (1024, 4), 512: (256, 2), 128: (64, 2)}
CHECKPOINT_NAMES: dict[int, str] = {
    4096: "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt",
    512: "resnet50_MixVPR_512_channels(256)_rows(2).ckpt",
    128: "resnet50_MixVPR_128_channels(64)_rows(2).ckpt",
}
WEIGHTS_ENV = "MATCHLAB_MIXVPR_WEIGHTS"
INPUT_SIZE = 320
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DOWNLOAD_HINT = (
    "Download it from the MixVPR authors: the links to "
    + ", ".join(f"'{CHECKPOINT_NAMES[d]}'" for d in (4096, 512, 128))
    + " are in the README of https://github.com/amaralibey/MixVPR (Google Drive; the repository "
    "has no license, so matchlab cannot ship the file). Then pass --weights PATH, set "
    f"{WEIGHTS_ENV}=PATH, or put the file in the matchlab weight cache. Without it, use the "
    "training-free fallback: --global vlad (what --global auto picks when no MixVPR checkpoint "
    "is found), which aggregates the local features already extracted.")


class MixVPRWeightsError(WeightsError):
    """No MixVPR checkpoint at the given place; the message says where to get one (a
    WeightsError, so `matchlab` prints it as an error message rather than a traceback)."""


# ----------------------------------------------------------------------------- backbone

class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (v1.5), with its parameter names."""

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * 4
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet50Trunk(nn.Module):
    """ResNet-50 stem + layer1..layer3 (layer4, avgpool and fc removed): [B, 1024, H/16, W/16]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, 64, 3, 1)
        self.layer2 = self._layer(256, 128, 4, 2)
        self.layer3 = self._layer(512, 256, 6, 2)

    @staticmethod
    def _layer(in_ch: int, width: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(in_ch, width, stride)]
        layers += [Bottleneck(width * 4, width) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class _Backbone(nn.Module):
    """Holds the trunk as `model`, so that parameter names start with 'backbone.model.'."""

    def __init__(self) -> None:
        super().__init__()
        self.model = ResNet50Trunk()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


# ----------------------------------------------------------------------------- aggregator

class FeatureMixer(nn.Module):
    """x + Linear(ReLU(Linear(LayerNorm(x)))) over the last dimension (the flattened grid)."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.mix = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, dim))
        for m in self.mix:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(x)


class MixVPRAggregator(nn.Module):
    """[B, C, h, w] -> [B, out_channels * out_rows], unit L2 norm."""

    def __init__(self, in_channels: int = 1024, in_hw: tuple[int, int] = (20, 20),
                 out_channels: int = 1024, out_rows: int = 4, mix_depth: int = 4,
                 mlp_ratio: float = 1.0) -> None:
        super().__init__()
        self.in_channels, self.in_hw = in_channels, tuple(in_hw)
        rows = in_hw[0] * in_hw[1]
        self.mix = nn.Sequential(*[FeatureMixer(rows, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(rows, out_rows, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != (self.in_channels, *self.in_hw):
            raise ValueError(f"MixVPR aggregator expects [B, {self.in_channels}, "
                             f"{self.in_hw[0]}, {self.in_hw[1]}] (a {INPUT_SIZE}x{INPUT_SIZE} "
                             f"input), got {tuple(x.shape)}")
        x = self.mix(x.flatten(2))                               # [B, C, hw]
        x = self.channel_proj(x.transpose(1, 2)).transpose(1, 2)  # [B, d', hw]
        x = self.row_proj(x)                                     # [B, d', r]
        return F.normalize(x.flatten(1), p=2, dim=-1)


# ----------------------------------------------------------------------------- checkpoints

def _state_dict(checkpoint: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint \
            and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]  # a Lightning checkpoint
    if not isinstance(checkpoint, dict) or not all(isinstance(v, Tensor)
                                                   for v in checkpoint.values()):
        raise WeightsError(f"{path} is not a MixVPR checkpoint (expected a dict of tensors)")
    state = {}
    for key, value in checkpoint.items():
        if key.startswith("module."):  # saved from a DataParallel wrapper
            key = key[len("module."):]
        state[key] = value
    return state


def checkpoint_dim(state: dict[str, Tensor], path: Path | str = "checkpoint") -> int:
    """Output dimension of a MixVPR state dict, from its projection shapes."""
    try:
        out_channels = state["aggregator.channel_proj.weight"].shape[0]
        out_rows = state["aggregator.row_proj.weight"].shape[0]
    except KeyError:
        raise WeightsError(f"{path} has no aggregator.channel_proj / aggregator.row_proj "
                         f"weights: not a MixVPR checkpoint") from None
    return int(out_channels * out_rows)


def find_mixvpr_checkpoint(dim: int | None = None) -> Path | None:
    """The MixVPR checkpoint a run can use without --weights, or None.

    Looked for, in order: the file named by $MATCHLAB_MIXVPR_WEIGHTS, then the official file
    names (4096 first, or only `dim`'s) in the weight mirrors ($MATCHLAB_WEIGHTS_MIRROR) and
    the weight cache (matchlab.weights.cache_dir()).
    """
    from ..weights import cache_dir, mirror_dirs

    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    dims = [dim] if dim is not None else [4096, 512, 128]
    for folder in [*mirror_dirs(), cache_dir()]:
        for d in dims:
            path = Path(folder) / CHECKPOINT_NAMES[d]
            if path.is_file():
                return path
    return None


# ----------------------------------------------------------------------------- model

class MixVPR(Configurable):
    """MixVPR global descriptor. Options:

    weights:    path of an official checkpoint (None: $MATCHLAB_MIXVPR_WEIGHTS or the weight
                cache, see `find_mixvpr_checkpoint`; "random": no checkpoint, random weights,
                for tests only).
    dim:        4096, 512 or 128; None = the checkpoint's. A checkpoint of another size is an
                error.
    interpolation: "bilinear" (the official training / evaluation transforms) or "bicubic"
                (the official demo) for the 320 x 320 resize.
    batch_size: images per forward pass in `extract_batch`.
    """

    default_conf = {"weights": None, "dim": None, "interpolation": "bilinear",
                    "batch_size": 8}

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        dim = self.conf["dim"]
        if dim is not None and dim not in VARIANTS:
            raise ConfigError(f"MixVPR: dim must be one of {sorted(VARIANTS)}, got {dim!r}")
        if self.conf["interpolation"] not in ("bilinear", "bicubic"):
            raise ConfigError("MixVPR: interpolation must be 'bilinear' or 'bicubic'")
        weights = self.conf["weights"]
        state = None
        if weights != "random":
            path = Path(weights) if weights is not None else find_mixvpr_checkpoint(dim)
            if path is None or not path.is_file():
                where = f"{path}" if path is not None else (
                    f"${WEIGHTS_ENV}, the weight mirrors or the cache "
                    f"(looked for {CHECKPOINT_NAMES[dim or 4096]!r})")
                raise MixVPRWeightsError(f"MixVPR checkpoint not found: {where}. "
                                         + DOWNLOAD_HINT)
            state = _state_dict(load_checkpoint(path), path)
            found = checkpoint_dim(state, path)
            if dim is not None and found != dim:
                raise ConfigError(f"MixVPR: {path} is the {found}-d model, dim={dim} was asked")
            dim = found
            if found not in VARIANTS:
                raise ConfigError(f"MixVPR: {path} has an unknown output size {found}; "
                                  f"released variants: {sorted(VARIANTS)}")
            self.weights_path = path
        else:
            self.weights_path = None
        dim = dim or 4096
        self.dim = dim
        out_channels, out_rows = VARIANTS[dim]
        self.backbone = _Backbone()
        self.aggregator = MixVPRAggregator(1024, (INPUT_SIZE // 16, INPUT_SIZE // 16),
                                           out_channels, out_rows)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        if state is not None:
            self._load(state, self.weights_path)
        self.eval()

    def _load(self, state: dict[str, Tensor], path: Path) -> None:
        own = self.state_dict()
        ignored = [k for k in state if k not in own and not k.startswith("backbone.model.")
                   and not k.startswith("aggregator.")]  # e.g. loss_fn.* of training code
        state = {k: v for k, v in state.items() if k not in ignored}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise WeightsError(
                f"{path} does not fit MixVPR-{self.dim}: "
                + (f"missing {len(missing)} key(s) (e.g. {missing[:3]})" if missing else "")
                + ("; " if missing and unexpected else "")
                + (f"unexpected {len(unexpected)} key(s) (e.g. {unexpected[:3]}; a layer4 "
                   f"would mean a checkpoint trained without layers_to_crop=[4])"
                   if unexpected else ""))
        bad = [k for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            raise WeightsError(f"{path}: shape mismatch for {bad[:3]}")
        self.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ inference
    def preprocess(self, image: ImageLike) -> Tensor:
        """One image -> [3, 320, 320] float32, ImageNet-normalised."""
        tensor = to_tensor(image, grayscale=False)
        if self.conf["interpolation"] == "bilinear":
            tensor = resize_image(tensor, (INPUT_SIZE, INPUT_SIZE))
        else:
            tensor = F.interpolate(tensor[None], size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic",
                                   align_corners=False, antialias=True)[0].clamp(0, 1)
        return (tensor - self.mean[0]) / self.std[0]

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images [B, 3, 320, 320] -> descriptors [B, dim], unit L2 norm."""
        if images.ndim != 4 or images.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"MixVPR takes [B, 3, {INPUT_SIZE}, {INPUT_SIZE}] normalised "
                             f"images (use preprocess()), got {tuple(images.shape)}")
        return self.aggregator(self.backbone(images))

    @torch.inference_mode()
    def extract_batch(self, images: Sequence[ImageLike]) -> Tensor:
        """Images (paths, arrays or tensors) -> [B, dim] float32 on the CPU."""
        device = self.mean.device
        out = []
        step = max(1, int(self.conf["batch_size"]))
        for i in range(0, len(images), step):
            batch = torch.stack([self.preprocess(im) for im in images[i:i + step]])
            out.append(self(batch.to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros((0, self.dim))

    def __call__(self, image, *args, **kwargs):  # a single image -> [dim]
        if isinstance(image, Tensor) and image.ndim == 4:
            return super().__call__(image, *args, **kwargs)
        return self.extract_batch([image])[0]
