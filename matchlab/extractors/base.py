"""What all extractors share: input conversion, resizing, batching and the mapping of
keypoints and affine frames back to ORIGINAL image pixels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, Union

import torch
from torch import Tensor

from ..images import ImageLike, rescale_points, resize_image, target_size, to_tensor
from ..precision import PrecisionOption
from ..types import Features


def rescale_lafs(lafs: Tensor, scale: tuple[float, float]) -> Tensor:
    """[N, 2, 3] LAFs from resized to original pixels: A' = diag(s) A, centre by rescale_points."""
    s = lafs.new_tensor(scale).view(1, 2, 1)
    out = lafs * s
    out[:, :, 2] = rescale_points(lafs[:, :, 2], scale)
    return out


@dataclass(frozen=True)
class PreparedImage:
    """An image as an extractor's network takes it: `image` float32 [C, h, w] in [0, 1],
    converted to the extractor's channels and resized to its target size, and `size`, the
    original (width, height) in pixels, to which keypoints are mapped back."""

    image: Tensor
    size: tuple[int, int]


class Extractor(PrecisionOption):
    """Base class: `extractor(image) -> Features`, `extractor.extract_batch(images)`.

    Subclasses set `grayscale` and implement `detect(images)` on a batch [B, C, h, w] of
    equally sized, already resized images in [0, 1], returning one dict per image with
    keypoints [N, 2] (resized pixels, pixel-centre convention), descriptors [N, D],
    scores [N] and optionally lafs [N, 2, 3] (resized pixels). A network runs its dense layers
    in `compute_dtype()` (the `precision` option, see matchlab.precision) and everything from
    its score map on in float32.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "resize": 1024,  # long side in px (int), exact (w, h), or None to keep the size
        "max_keypoints": 2048,  # keep at most this many, best scores first (None: all)
        # affine frames (matchlab.extractors.frames): None (the detector's own, if any),
        # "affnet" (AffNet shape + OriNet orientation) or "affnet-upright" (AffNet only)
        "lafs": None,
        "laf_scale": None,  # frame radius: px (fixed), "log" (scale selection), None: auto
    }
    grayscale: ClassVar[bool] = True

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        frames = None  # AffNet / OriNet weights load only when frames are asked for
        if self.conf["lafs"] is not None:
            from .frames import AffineFrames
            frames = AffineFrames(self.conf["lafs"], self.conf["laf_scale"])
        # kept outside the module tree, so the extractor's state_dict stays its checkpoint's
        self.__dict__["_frames"] = frames

    def _add_frames(self, batch: Tensor, outs: list[dict[str, Tensor]]) -> None:
        """In place: each output's "lafs" from AffineFrames on the resized image."""
        from .frames import to_gray

        frames = self.__dict__["_frames"].to(batch.device)
        gray = to_gray(batch)
        for j, out in enumerate(outs):
            out["lafs"] = frames(gray[j:j + 1], out["keypoints"], out.get("lafs"))

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        raise NotImplementedError

    def prepare(self, image: ImageLike) -> PreparedImage:
        """Decode (a path), convert and resize: everything before the network, which a
        caller may run ahead in another thread (matchlab.prefetch)."""
        tensor = to_tensor(image, self.grayscale)
        size = (tensor.shape[-1], tensor.shape[-2])
        return PreparedImage(resize_image(tensor, target_size(size, self.conf["resize"])), size)

    def forward(self, image: ImageLike | PreparedImage) -> Features:
        return self.extract_batch([image])[0]

    @torch.inference_mode()
    def extract_batch(self, images: Sequence[Union[ImageLike, PreparedImage]]) -> list[Features]:
        """Features of each image (any ImageLike, or a PreparedImage of this extractor);
        equally sized images share one forward pass."""
        prepared = [im if isinstance(im, PreparedImage) else self.prepare(im) for im in images]
        sizes = [p.size for p in prepared]
        results: list[Features | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault((p.image.shape[-1], p.image.shape[-2]), []).append(i)
        for size, idx in groups.items():
            batch = torch.stack([prepared[i].image for i in idx]).to(self.device)
            outs = self.detect(batch)
            if self.conf["lafs"] is not None:
                self._add_frames(batch, outs)
            for i, out in zip(idx, outs):
                scale = (sizes[i][0] / size[0], sizes[i][1] / size[1])
                lafs = out.get("lafs")
                results[i] = Features(
                    keypoints=rescale_points(out["keypoints"].float(), scale).cpu(),
                    descriptors=out["descriptors"].float().cpu(),
                    scores=out["scores"].float().cpu(),
                    image_size=sizes[i],
                    lafs=None if lafs is None else rescale_lafs(lafs.float(), scale).cpu(),
                )
        return results  # type: ignore[return-value]


def top_k(scores: Tensor, k: int | None) -> Tensor:
    """Indices of the k best scores (all, best first, when k is None or >= N)."""
    if k is None or k >= scores.shape[0]:
        return torch.argsort(scores, descending=True)
    return torch.topk(scores, k).indices
