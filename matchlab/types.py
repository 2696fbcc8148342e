"""The data types every stage passes around: `Features`, `Matches` and `TwoViewGeometry`.

Conventions (used everywhere in matchlab):
- keypoints are (x, y) in pixels of the ORIGINAL image, with (0, 0) the centre of the
  top-left pixel (so the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]);
- descriptors are row-major, one row per keypoint ([N, D]); the HDF5 store transposes
  them to hloc's [D, N] on write;
- everything returned to users is on the CPU unless asked otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from .errors import ShapeError


def _check(name: str, t: Tensor, ndim: int, n: int | None = None, last: int | None = None) -> None:
    if not isinstance(t, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ShapeError(f"{name} has {t.shape[0]} rows but there are {n} keypoints")
    if last is not None and t.shape[-1] != last:
        raise ShapeError(f"{name} must have last dimension {last}, got shape {tuple(t.shape)}")


@dataclass
class Features:
    """Local features of one image.

    keypoints:   [N, 2] float32, (x, y) in original-image pixels, pixel-centre convention.
    descriptors: [N, D] float32.
    scores:      [N] float32 detection scores (higher is better).
    image_size:  (width, height) of the original image in pixels.
    lafs:        [N, 2, 3] float32 local affine frames (kornia layout: [A | centre]) in
                 original-image pixels, or None when the extractor gives none.
    """

    keypoints: Tensor
    descriptors: Tensor
    scores: Tensor
    image_size: tuple[int, int]
    lafs: Tensor | None = None

    def __post_init__(self) -> None:
        _check("keypoints", self.keypoints, 2, last=2)
        n = self.keypoints.shape[0]
        _check("descriptors", self.descriptors, 2, n=n)
        _check("scores", self.scores, 1, n=n)
        if self.lafs is not None:
            _check("lafs", self.lafs, 3, n=n)
            if tuple(self.lafs.shape[1:]) != (2, 3):
                raise ShapeError(f"lafs must be [N, 2, 3], got {tuple(self.lafs.shape)}")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ShapeError(f"image_size must be (width, height) > 0, got {self.image_size}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @property
    def device(self) -> torch.device:
        return self.keypoints.device

    def to(self, device: torch.device | str) -> "Features":
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    def subset(self, index: Tensor) -> "Features":
        """The features selected by a boolean mask or index tensor."""
        return replace(self, keypoints=self.keypoints[index], descriptors=self.descriptors[index],
                       scores=self.scores[index],
                       lafs=None if self.lafs is None else self.lafs[index])


@dataclass
class Matches:
    """Matches from image 0 to image 1.

    matches0: [N0] int64, index of the matched keypoint in image 1, or -1.
    scores0:  [N0] float32 confidence in [0, 1] (0 where unmatched).
    geometry: the two-view model a matcher estimated itself (see `TwoViewGeometry`; its
              inliers are [N0] over image 0's keypoints), or None.
    extras:   a matcher's own diagnostics (documented by each matcher), never needed by the
              pipeline.
    """

    matches0: Tensor
    scores0: Tensor
    extras: dict = field(default_factory=dict)
    geometry: TwoViewGeometry | None = None

    def __post_init__(self) -> None:
        _check("matches0", self.matches0, 1)
        _check("scores0", self.scores0, 1, n=self.matches0.shape[0])
        if self.geometry is not None and self.geometry.inliers.shape != self.matches0.shape:
            raise ShapeError(f"geometry.inliers must be [N0] = {tuple(self.matches0.shape)}, "
                             f"got {tuple(self.geometry.inliers.shape)}")

    def __len__(self) -> int:
        """Number of matched pairs (not of keypoints)."""
        return int((self.matches0 > -1).sum())

    def pairs(self) -> Tensor:
        """[M, 2] int64 index pairs (i in image 0, j in image 1) of the valid matches."""
        valid = self.matches0 > -1
        return torch.stack([torch.nonzero(valid)[:, 0], self.matches0[valid]], -1)

    def matched_scores(self) -> Tensor:
        """[M] scores of the pairs returned by `pairs()`, in the same order."""
        return self.scores0[self.matches0 > -1]

    def to(self, device: torch.device | str) -> "Matches":
        return replace(self, matches0=self.matches0.to(device), scores0=self.scores0.to(device))

    @classmethod
    def empty(cls, n0: int) -> "Matches":
        return cls(torch.full((n0,), -1, dtype=torch.long), torch.zeros(n0))


GEOMETRY_MODELS = ("homography", "essential", "fundamental")


@dataclass
class TwoViewGeometry:
    """A two-view model estimated from correspondences, and which of them agree with it.

    model:   "homography" (x1 ~ matrix @ x0, pixels of the original images),
             "essential" (x1n^T matrix x0n = 0, normalised camera coordinates) or
             "fundamental" (x1^T matrix x0 = 0, pixels).
    matrix:  [3, 3] float64.
    inliers: [M] bool over the correspondences the model was estimated from (on `Matches`:
             [N0] over image 0's keypoints, True where matches0 is an inlier).
    R, t:    [3, 3], [3] float64 relative pose (x_cam1 = R x_cam0 + t, |t| = 1) for an
             essential model whose decomposition was chosen by cheirality, else None.
    """

    model: str
    matrix: Tensor
    inliers: Tensor
    R: Tensor | None = None
    t: Tensor | None = None

    def __post_init__(self) -> None:
        if self.model not in GEOMETRY_MODELS:
            raise ShapeError(f"model must be one of {GEOMETRY_MODELS}, got {self.model!r}")
        if tuple(self.matrix.shape) != (3, 3):
            raise ShapeError(f"matrix must be [3, 3], got {tuple(self.matrix.shape)}")
        _check("inliers", self.inliers, 1)
        if (self.R is None) != (self.t is None):
            raise ShapeError("R and t go together: give both or neither")
        if self.R is not None and (tuple(self.R.shape) != (3, 3) or self.t.numel() != 3):
            raise ShapeError(f"R must be [3, 3] and t [3], got {tuple(self.R.shape)}, "
                             f"{tuple(self.t.shape)}")

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())
