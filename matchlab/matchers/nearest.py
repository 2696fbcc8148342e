"""Nearest-neighbour descriptor matching with mutual check, Lowe's ratio test and a distance
threshold, in bounded memory.

Distances are Euclidean (L2) between descriptors; for the usual unit-norm descriptors this is
sqrt(2 - 2 cos). The N0 x N1 distance matrix is never held whole: it is computed tile by tile
(`chunk_size` x `chunk_size`), keeping the two nearest neighbours of every row (image 0 ->
image 1) and of every column (image 1 -> image 0) from one pass over the tiles, so memory is
O((N0 + N1) + chunk_size^2) whatever the number of keypoints.

Semantics follow hloc's `nearest_neighbor` matcher: the ratio and distance tests apply in both
directions, and the mutual check keeps i -> j only when j's accepted nearest neighbour is i.
Scores are (cos + 1) / 2 of the matched descriptors, in [0, 1] (0 where unmatched).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..registry import ConfigError
from ..types import Features, Matches, ShapeError
from .base import Matcher, MatcherCapabilities


def _merge_top2(best_d: Tensor, best_i: Tensor, new_d: Tensor, new_i: Tensor) -> None:
    """In place: the two smallest of (best, new) per row. best_* [n, 2], new_* [n, k<=2]."""
    d = torch.cat([best_d, new_d], 1)
    i = torch.cat([best_i, new_i], 1)
    d, order = d.topk(2, dim=1, largest=False)
    best_d.copy_(d)
    best_i.copy_(i.gather(1, order))


def top2_neighbours(desc0: Tensor, desc1: Tensor, chunk_size: int | None = 2048
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two nearest neighbours by squared L2 distance, both ways, tile by tile.

    Returns (dist0 [N0, 2], idx0 [N0, 2], dist1 [N1, 2], idx1 [N1, 2]): for each descriptor
    of image 0 its nearest and second-nearest descriptors in image 1 (ascending distance), and
    the same for image 1 in image 0. Missing neighbours (fewer than two candidates) have
    distance inf and index -1. chunk_size=None computes the whole matrix at once.
    """
    n0, n1 = desc0.shape[0], desc1.shape[0]
    device, dtype = desc0.device, desc0.dtype
    sq0, sq1 = (desc0 * desc0).sum(1), (desc1 * desc1).sum(1)
    dist0 = torch.full((n0, 2), float("inf"), device=device, dtype=dtype)
    dist1 = torch.full((n1, 2), float("inf"), device=device, dtype=dtype)
    idx0 = torch.full((n0, 2), -1, device=device, dtype=torch.long)
    idx1 = torch.full((n1, 2), -1, device=device, dtype=torch.long)
    step = chunk_size or max(n0, n1, 1)
    for r in range(0, n0, step):
        rows = slice(r, min(r + step, n0))
        a = desc0[rows]
        for c in range(0, n1, step):
            cols = slice(c, min(c + step, n1))
            tile = a @ desc1[cols].T  # a tile-sized allocation (and its transpose below)
            tile.mul_(-2).add_(sq0[rows, None]).add_(sq1[None, cols]).clamp_(min=0)
            d, i = tile.topk(min(2, tile.shape[1]), dim=1, largest=False)
            _merge_top2(dist0[rows], idx0[rows], d, i + c)
            tile = tile.T.contiguous()  # topk along rows is several times faster than dim=0
            d, i = tile.topk(min(2, tile.shape[1]), dim=1, largest=False)
            _merge_top2(dist1[cols], idx1[cols], d, i + r)
    return dist0, idx0, dist1, idx1


def cosine_candidates(desc0: Tensor, desc1: Tensor, k: int, chunk: int = 4096
                      ) -> tuple[Tensor, Tensor]:
    """Top-k by cosine similarity: (indices [N0, k'], scores (cos + 1) / 2 [N0, k'], best
    first), k' = min(k, N1); image 0 is processed `chunk` rows at a time."""
    d0 = torch.nn.functional.normalize(desc0.float(), dim=1)
    d1 = torch.nn.functional.normalize(desc1.float(), dim=1)
    k = min(k, d1.shape[0])
    idx, val = [], []
    for s in range(0, d0.shape[0], chunk):
        best = (d0[s:s + chunk] @ d1.T).topk(k, dim=1)
        idx.append(best.indices)
        val.append(best.values)
    if not idx:
        return torch.zeros((0, k), dtype=torch.long), torch.zeros((0, k))
    return torch.cat(idx), ((torch.cat(val) + 1) / 2).clamp(0, 1)


class NearestNeighbor(Matcher):
    """`matcher(features0, features1) -> Matches` by descriptor nearest neighbours.

    Options:
      mutual_check:       keep i -> j only if j's nearest neighbour is i.
      ratio_threshold:    Lowe's ratio test, nearest / second-nearest L2 distance <= r (e.g. 0.8).
      distance_threshold: maximum L2 distance of a match (unit-norm descriptors: in [0, 2]).
      chunk_size:         rows (and columns) per tile of the distance matrix; None: no tiling.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "mutual_check": True,
        "ratio_threshold": None,
        "distance_threshold": None,
        "chunk_size": 2048,
    }
    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities()
    result_neutral_options: ClassVar[tuple[str, ...]] = ("chunk_size",)  # speed / memory only

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        ratio, dist, chunk = (self.conf[k] for k in
                              ("ratio_threshold", "distance_threshold", "chunk_size"))
        if ratio is not None and not 0 < float(ratio) <= 1:
            raise ConfigError(f"NearestNeighbor: ratio_threshold must be in (0, 1], got {ratio!r}")
        if dist is not None and not float(dist) > 0:
            raise ConfigError(f"NearestNeighbor: distance_threshold must be > 0, got {dist!r}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                                  or chunk < 1):
            raise ConfigError(f"NearestNeighbor: chunk_size must be a positive int or None, "
                              f"got {chunk!r}")
        if not isinstance(self.conf["mutual_check"], bool):
            raise ConfigError(f"NearestNeighbor: mutual_check must be True or False, "
                              f"got {self.conf['mutual_check']!r}")

    def _accept(self, dist: Tensor) -> Tensor:
        """Which nearest neighbours pass the ratio and distance tests (dist: squared, [n, 2])."""
        keep = torch.isfinite(dist[:, 0])
        ratio, max_dist = self.conf["ratio_threshold"], self.conf["distance_threshold"]
        if ratio is not None:  # on squared distances; an absent second neighbour (inf) passes
            keep &= dist[:, 0] <= float(ratio) ** 2 * dist[:, 1]
        if max_dist is not None:
            keep &= dist[:, 0] <= float(max_dist) ** 2
        return keep

    @torch.inference_mode()
    def forward(self, feats0: Features, feats1: Features) -> Matches:
        d0, d1 = feats0.descriptors, feats1.descriptors
        n0, n1 = d0.shape[0], d1.shape[0]
        degenerate = tuple(d0.shape) == (0, 0) or tuple(d1.shape) == (0, 0)  # empty, no D
        if d0.shape[1] != d1.shape[1] and not degenerate:
            raise ShapeError(f"descriptor dimensions differ: image 0 has {d0.shape[1]}, image 1 "
                             f"has {d1.shape[1]} (features from different extractors?)")
        if n0 == 0 or n1 == 0:
            return Matches.empty(n0)
        dtype = torch.float64 if torch.float64 in (d0.dtype, d1.dtype) else torch.float32
        d0 = d0.to(dtype)
        d1 = d1.to(device=d0.device, dtype=dtype)
        dist0, idx0, dist1, idx1 = top2_neighbours(d0, d1, self.conf["chunk_size"])
        m0 = torch.where(self._accept(dist0), idx0[:, 0], -1)
        if self.conf["mutual_check"]:
            m1 = torch.where(self._accept(dist1), idx1[:, 0], -1)
            valid = m0 > -1
            back = m1[m0.clamp(min=0)]
            m0 = torch.where(valid & (back == torch.arange(n0, device=m0.device)), m0, -1)
        valid = m0 > -1
        a, b = d0[valid], d1[m0[valid]]
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)
        scores = torch.zeros(n0, dtype=torch.float32, device=d0.device)
        scores[valid] = ((cos + 1) / 2).clamp(0, 1).float()
        return Matches(m0.cpu(), scores.cpu())

    @torch.inference_mode()
    def candidates(self, feats0: Features, feats1: Features, k: int) -> tuple[Tensor, Tensor]:
        """The k most cosine-similar descriptors of image 1 for each keypoint of image 0:
        (indices [N0, k'], scores (cos + 1) / 2 [N0, k']), k' = min(k, N1); with no keypoints
        on a side, [N0, k] of -1 / 0."""
        if k < 1:
            raise ValueError("k must be >= 1")
        n0 = len(feats0)
        if n0 == 0 or len(feats1) == 0:
            return torch.full((n0, k), -1, dtype=torch.long), torch.zeros(n0, k)
        return cosine_candidates(feats0.descriptors, feats1.descriptors, k)
