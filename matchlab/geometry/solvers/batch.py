"""Batched inputs of the torch solvers: checks, batching and padding of correspondences."""
from __future__ import annotations

import torch
from torch import Tensor


def prepare_batch(x0: Tensor, x1: Tensor, weights: Tensor | None, mask: Tensor | None):
    """Batch, check and broadcast the inputs of the torch solvers: x0, x1 [B, M, 2] or [M, 2],
    weights [B, M] (default 1, cast to x0's dtype), mask [B, M] (default all, cast to bool).
    Returns (x0, x1, weights, mask, was_batched), all batched."""
    if not (torch.is_tensor(x0) and torch.is_tensor(x1)):
        raise TypeError("x0 and x1 must be torch tensors ([B, M, 2] or [M, 2])")
    batched = x0.dim() == 3
    if not batched:
        x0, x1 = x0[None], x1[None]
        weights = None if weights is None else weights[None]
        mask = None if mask is None else mask[None]
    if x0.dim() != 3 or x0.shape[-1] != 2 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must both be [B, M, 2] or [M, 2], got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0, x1 must be floating point, got {x0.dtype}")
    B, M = x0.shape[:2]
    if mask is None:
        mask = torch.ones(B, M, dtype=torch.bool, device=x0.device)
    mask = mask.to(torch.bool)
    if weights is None:
        weights = torch.ones(B, M, dtype=x0.dtype, device=x0.device)
    if weights.shape != (B, M) or mask.shape != (B, M):
        raise ValueError(f"weights and mask must be [B, M] = {(B, M)}, got "
                         f"{tuple(weights.shape)} and {tuple(mask.shape)}")
    weights = weights.to(x0.dtype)
    return x0, x1, weights, mask, batched


def check_count(mask: Tensor, weights: Tensor, minimum: int, what: str) -> None:
    """ValueError naming the pairs with fewer than `minimum` valid matches of positive weight."""
    counts = (mask & (weights > 0)).sum(-1)
    bad = torch.nonzero(counts < minimum)[:, 0].tolist()
    if bad:
        raise ValueError(f"{what} needs at least {minimum} matches with positive weight per "
                         f"pair; batch entries {bad} have {counts[bad].tolist()}")


def unbatch(value, batched: bool):
    """`value` without its batch dimension when the caller passed one pair."""
    return value if batched else value[0]


def pad_batch(pairs: list[tuple[Tensor, Tensor, Tensor | None]], dtype=torch.float64
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack pairs of different lengths: [(x0 [Mi, 2], x1 [Mi, 2], weights [Mi] or None)] ->
    (x0 [B, M, 2], x1 [B, M, 2], weights [B, M], mask [B, M]), M = max Mi, padded with zeros."""
    M = max((len(p[0]) for p in pairs), default=0)
    B = len(pairs)
    x0 = torch.zeros(B, M, 2, dtype=dtype)
    x1 = torch.zeros(B, M, 2, dtype=dtype)
    w = torch.zeros(B, M, dtype=dtype)
    mask = torch.zeros(B, M, dtype=torch.bool)
    for i, (a, b, s) in enumerate(pairs):
        n = len(a)
        x0[i, :n], x1[i, :n] = torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype)
        w[i, :n] = 1.0 if s is None else torch.as_tensor(s, dtype=dtype)
        mask[i, :n] = True
    return x0, x1, w, mask
