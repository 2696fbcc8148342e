"""Local affine frames for detectors that give only points (SuperPoint, DISK, ALIKED), or
affine shapes on top of SIFT's similarity frames: the `lafs` option of every extractor.

Pipeline for one image (grayscale, the resized image the detector saw), per keypoint:
1. scale: `laf_scale` = a number r gives every frame the radius r px (a fixed patch: the
   affine correspondences then carry no scale change); "log" selects the characteristic
   scale sigma* = argmax over sigma of the scale-normalised Laplacian |sigma^2 lap(G_sigma * I)|
   at the keypoint (Lindeberg's scale selection, evaluated as differences of Gaussians on a
   small pyramid; sigma in 1.6 * 2^(i/3), i = 0..14), radius = 6 sigma* (SIFT's support,
   kornia's mrSize), clipped to [8, 128] px. Frames that come from the detector (SIFT) keep
   their own scale and orientation when `laf_scale` is None.
2. shape: AffNet (Mishkin et al. ECCV 2018) through kornia's LAFAffNetShapeEstimator with
   the AffNet.pth weights of our registry (orientation preserved);
3. orientation: OriNet through kornia's LAFOrienter (36 bins, 32 px patches), unless
   `lafs="affnet-upright"` (orientation kept: 0 for point detectors, i.e. upright images).
The choice of "log" as the default scale source is measured by benchmarks/affineglue.py frames
(affine correspondences vs the local linearisation of the true homography on graf).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weights import WeightsError, load_weights_into

LAF_MODES = (None, "affnet", "affnet-upright")
MR_SIZE = 6.0        # frame radius in units of the characteristic sigma (SIFT / kornia)
SIGMA0 = 1.6
LEVELS_PER_OCTAVE = 3
NUM_SIGMAS = 15       # sigma in 1.6 .. 1.6 * 2^(14/3) ~ 40 px
RADIUS_RANGE = (8.0, 128.0)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with reflect padding."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    pad_h, pad_w = min(r, x.shape[-2] - 1), min(r, x.shape[-1] - 1)
    x = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else x
    x = F.conv2d(x, k.view(1, 1, 1, -1)[..., r - pad_w:r + pad_w + 1])
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else x
    return F.conv2d(x, k.view(1, 1, -1, 1)[..., r - pad_h:r + pad_h + 1, :])


def _sample(x: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples [N] of a map [1, 1, h, w] at points [N, 2] (pixel-centre convention)."""
    h, w = x.shape[-2:]
    grid = (points + 0.5) / points.new_tensor([w, h]) * 2 - 1
    return F.grid_sample(x, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                         align_corners=False).view(-1)


def characteristic_sigma(gray: Tensor, keypoints: Tensor) -> Tensor:
    """sigma* [N] (px of `gray` [1, 1, H, W]) maximising the scale-normalised |DoG| response
    (a stand-in for sigma^2 |Laplacian|) at each keypoint [N, 2]."""
    responses = []
    x = gray
    octave_scale = 1.0
    level_sigmas = [SIGMA0 * 2 ** (i / LEVELS_PER_OCTAVE) for i in range(LEVELS_PER_OCTAVE + 2)]
    n_octaves = math.ceil(NUM_SIGMAS / LEVELS_PER_OCTAVE)
    for _ in range(n_octaves):
        # blur the octave's base image to each level directly (all sigmas relative to this octave)
        blurred = [_gaussian_blur(x, s) for s in level_sigmas]
        pts = (keypoints + 0.5) / octave_scale - 0.5
        for i in range(LEVELS_PER_OCTAVE):
            # DoG between levels i+1 and i approximates (k - 1) sigma^2 lap G at the midway sigma
            dog = blurred[i + 1] - blurred[i]
            responses.append(_sample(dog, pts).abs())
        if min(x.shape[-2:]) < 16:
            break
        x = F.avg_pool2d(blurred[LEVELS_PER_OCTAVE], 2)  # sigma 2 * SIGMA0 -> SIGMA0 at half size
        octave_scale *= 2
    resp = torch.stack(responses[:NUM_SIGMAS], 1)                    # [N, S]
    sigmas = keypoints.new_tensor([SIGMA0 * 2 ** ((i + 0.5) / LEVELS_PER_OCTAVE)
                                   for i in range(resp.shape[1])])
    best = resp.argmax(1)
    # parabolic refinement of the peak in log-sigma
    i = best.clamp(1, resp.shape[1] - 2)
    r0, r1, r2 = (resp.gather(1, (i + d)[:, None])[:, 0] for d in (-1, 0, 1))
    den = r0 - 2 * r1 + r2
    offset = torch.where(den < 0, 0.5 * (r0 - r2) / den.clamp(max=-1e-12), torch.zeros_like(den))
    offset = torch.where((best > 0) & (best < resp.shape[1] - 1), offset.clamp(-0.5, 0.5), 0 * offset)
    log_sigma = torch.log2(sigmas[best]) + offset / LEVELS_PER_OCTAVE
    return 2 ** log_sigma


class AffineFrames(nn.Module):
    """keypoints (+ optional detector LAFs) + image -> LAFs [N, 2, 3] (see the module doc)."""

    def __init__(self, mode: str = "affnet", scale: float | str | None = "log") -> None:
        super().__init__()
        import kornia.feature as KF

        if mode not in LAF_MODES[1:]:
            raise ValueError(f"lafs must be one of {LAF_MODES}, got {mode!r}")
        if not (scale is None or scale == "log" or (isinstance(scale, (int, float))
                                                     and not isinstance(scale, bool) and scale > 0)):
            raise ValueError(f"laf_scale must be a radius in px > 0, 'log' or None, got {scale!r}")
        self.mode, self.scale = mode, scale
        self.affnet = KF.LAFAffNetShapeEstimator(pretrained=False, preserve_orientation=True)
        _load(self.affnet, "AffNet.pth")
        self.orienter = None
        if mode == "affnet":
            orinet = KF.OriNet(pretrained=False)
            _load(orinet, "OriNet.pth")
            self.orienter = KF.LAFOrienter(patch_size=32, num_angular_bins=36, angle_detector=orinet)
        self.eval()

    @torch.inference_mode()
    def forward(self, gray: Tensor, keypoints: Tensor, lafs: Tensor | None = None) -> Tensor:
        """gray [1, 1, H, W] in [0, 1]; keypoints [N, 2]; lafs [N, 2, 3] from the detector or
        None. Returns [N, 2, 3] in the same pixels."""
        from kornia.feature import laf_from_center_scale_ori

        n = keypoints.shape[0]
        if n == 0:
            return keypoints.new_zeros((0, 2, 3))
        gray = gray.float()
        kp = keypoints.float()
        if self.scale is None and lafs is not None:
            base = lafs.float()
        else:
            if self.scale == "log" or (self.scale is None and lafs is None):
                radius = (MR_SIZE * characteristic_sigma(gray, kp)).clamp(*RADIUS_RANGE)
            else:
                radius = torch.full((n,), float(self.scale), device=kp.device)
            base = laf_from_center_scale_ori(kp[None], radius.view(1, n, 1, 1),
                                             torch.zeros(1, n, 1, device=kp.device))[0]
            if lafs is not None:  # keep the detector's orientation: rotate by its frame
                a = lafs[:, :, :2].float()
                rot = a / torch.sqrt((a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]).abs()
                                     ).clamp(min=1e-12)[:, None, None]
                base = torch.cat([rot @ base[:, :, :2], base[:, :, 2:]], 2)
        out = self.affnet(base[None], gray)
        if self.orienter is not None:
            out = self.orienter(out, gray)
        out = out[0]
        out[:, :, 2] = keypoints.to(out.dtype)  # the detector's keypoints, exactly
        return out


def _load(module: nn.Module, name: str) -> None:
    missing, unexpected = load_weights_into(module, name, strict=False,
                                            convert=lambda state: state.get("state_dict", state))
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{name}: missing keys {missing}, unexpected keys {unexpected}")


def to_gray(images: Tensor) -> Tensor:
    """[B, C, H, W] in [0, 1] -> [B, 1, H, W] (ITU-R 601 luma for RGB)."""
    if images.shape[1] == 1:
        return images
    w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images[:, :3] * w).sum(1, keepdim=True)
