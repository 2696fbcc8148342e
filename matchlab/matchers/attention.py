"""Multi-head attention building blocks shared by the attentional matchers (SuperGlue, LightGlue).

Layout conventions (used by every function here):
- tokens are channel-last: ``x`` is ``[B, N, C]`` with ``C = heads * head_dim``;
- heads are *head-major* inside the channel dimension: channel ``h * head_dim + d`` is
  dimension ``d`` of head ``h``. ``split_heads`` then turns ``[B, N, C]`` into the
  ``[B, heads, N, head_dim]`` view that ``scaled_dot_product_attention`` wants WITHOUT a
  copy (only strides change), even when ``x`` is a column slice of a wider projection
  (e.g. the q, k, v blocks of one fused projection).
- Checkpoints that store another channel order (SuperGlue's ``view(B, dim, heads, N)``
  puts channel ``c`` at ``(d = c // heads, h = c % heads)``) are converted once, at weight
  preparation time, by permuting the rows of the q/k/v projections and the columns of the
  output projection with ``interleaved_to_head_major`` (see ``permute_heads_*``).
- masks are boolean ``[B, N]`` with True = a real token, False = padding.

All functions are pure (no module state) so that fused weights can be prepared once
and reused across calls.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def interleaved_to_head_major(channels: int, heads: int, device=None) -> Tensor:
    """[C] int64 permutation ``p`` with ``new[c'] = old[p[c']]``.

    Old (interleaved) layout: channel ``c = d * heads + h``; new (head-major) layout:
    channel ``c' = h * head_dim + d``. So ``p[h * head_dim + d] = d * heads + h``.
    """
    if channels % heads:
        raise ValueError(f"{channels} channels cannot be split into {heads} heads")
    head_dim = channels // heads
    return torch.arange(channels, device=device).view(head_dim, heads).t().reshape(-1)


def permute_heads_out(weight: Tensor, bias: Tensor | None, heads: int) -> tuple[Tensor, Tensor | None]:
    """Reorder the OUTPUT channels of a projection ``[C_out, C_in]`` (q, k or v) from the
    interleaved to the head-major layout."""
    perm = interleaved_to_head_major(weight.shape[0], heads, weight.device)
    return weight[perm], None if bias is None else bias[perm]


def permute_heads_in(weight: Tensor, heads: int) -> Tensor:
    """Reorder the INPUT channels of a projection ``[C_out, C_in]`` that consumes merged
    heads (the output/merge projection) from the interleaved to the head-major layout."""
    perm = interleaved_to_head_major(weight.shape[1], heads, weight.device)
    return weight[:, perm]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, N, heads * D]`` -> ``[B, heads, N, D]`` as a view (no copy).

    ``x`` may be a strided slice (its last dimension must have stride 1)."""
    b, n, c = x.shape
    return x.unflatten(-1, (heads, c // heads)).transpose(1, 2)


def merge_heads(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``[B, heads, N, D]`` -> ``[B, N, heads * D]`` (head-major channels).

    With ``out`` (a ``[B, N, heads * D]`` tensor or a strided slice of one) the result is
    written there, which avoids an extra allocation when tokens of several images share
    one buffer."""
    b, h, n, d = x.shape
    if out is None:
        return x.transpose(1, 2).reshape(b, n, h * d)
    out.unflatten(-1, (h, d)).copy_(x.transpose(1, 2))
    return out


def key_mask(mask: Tensor | None) -> Tensor | None:
    """Boolean key-padding mask ``[B, Nk]`` -> the ``[B, 1, 1, Nk]`` attn_mask of SDPA."""
    return None if mask is None else mask[:, None, None, :]


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
              scale: float | None = None) -> Tensor:
    """Softmax attention ``softmax(q k^T * scale) v`` per head.

    q: [B, H, Nq, D], k: [B, H, Nk, D], v: [B, H, Nk, Dv] (strided views are fine);
    mask: [B, Nk] bool key mask (True = attend) or None; scale defaults to D ** -0.5.
    Returns [B, H, Nq, Dv]. Uses ``F.scaled_dot_product_attention``, which picks a fused
    (flash / memory-efficient) kernel on CPU and GPU: the [Nq, Nk] matrix is never
    materialised, so memory stays linear in the number of keypoints.
    Every query row must see at least one unmasked key (else the row is NaN).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask), scale=scale)


def attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                        scale: float | None = None) -> Tensor:
    """The same maths written out (materialises [B, H, Nq, Nk]); for tests and baselines."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sim = torch.einsum("bhnd,bhmd->bhnm", q, k) * scale
    if mask is not None:
        sim = sim.masked_fill(~key_mask(mask), float("-inf"))
    return torch.einsum("bhnm,bhmd->bhnd", sim.softmax(-1), v)


def fold_batchnorm(weight: Tensor, bias: Tensor | None, bn: torch.nn.modules.batchnorm._BatchNorm
                   ) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a linear layer ``[C_out, C_in]`` into it.

    Returns (weight', bias') with ``bn(W x + b) == W' x + b'`` (running statistics).
    Computed in the dtype of ``weight`` (pass float64 tensors for an exact fold)."""
    scale = bn.weight.to(weight) / torch.sqrt(bn.running_var.to(weight) + bn.eps)
    b = torch.zeros_like(scale) if bias is None else bias.to(weight)
    return weight * scale[:, None], (b - bn.running_mean.to(weight)) * scale + bn.bias.to(weight)


def conv1x1_weight(conv: torch.nn.Conv1d, dtype=torch.float64) -> tuple[Tensor, Tensor | None]:
    """A kernel-size-1 ``Conv1d`` as a linear layer: ([C_out, C_in], [C_out] or None)."""
    if conv.kernel_size != (1,) or conv.groups != 1:
        raise ValueError("only 1x1 convolutions without groups can be folded into matmuls")
    w = conv.weight.detach()[:, :, 0].to(dtype)
    return w, None if conv.bias is None else conv.bias.detach().to(dtype)


def rotate_half_rows(weight: Tensor, heads: int) -> Tensor:
    """Fold the rotary ``rotate_half`` into a projection producing head-major channels.

    ``rotate_half`` maps each adjacent pair ``(a, b)`` of a head's dimensions to ``(-b, a)``;
    applied to ``W x + c`` it is a signed permutation of the rows of ``W`` (``[C_out, C_in]``)
    and of ``c`` (``[C_out]``), so ``rotate_half(W x + c) == rotate_half_rows(W) x +
    rotate_half_rows(c)``. Used by LightGlue's rotary positional encoding."""
    c = weight.shape[0]
    if c % heads or (c // heads) % 2:
        raise ValueError(f"{c} channels cannot be split into {heads} heads of even size")
    pairs = weight.reshape(c // 2, 2, *weight.shape[1:])
    return torch.stack([-pairs[:, 1], pairs[:, 0]], 1).reshape(weight.shape)
