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

The functions are pure (no module state) so that fused weights can be prepared once
and reused across calls; ``DerivedWeights`` caches them per module until a parameter
changes. The fused-weights helpers (``linear_weight``, ``conv1x1_weight``,
``fold_batchnorm``, ``fuse_attention_layer``, ``add_residual``) and the match rule
(``mutual_matches``) are shared by SuperGlue and LightGlue.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def linear_weight(linear: nn.Linear, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """A ``Linear`` layer's (weight [C_out, C_in], bias [C_out]) detached, in ``dtype``."""
    return linear.weight.detach().to(dtype), linear.bias.detach().to(dtype)


def fuse_attention_layer(projections: list[tuple[Tensor, Tensor]], w_merge: Tensor, b_merge: Tensor,
                         w1: Tensor, b1: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
    """Fuse the linear parts of an attention layer whose message MLP reads ``cat([x, message])``.

    projections: the (weight [C_p, C], bias [C_p]) of the projections of ``x`` (q, k, v, ...);
    w_merge [C, C], b_merge [C]: the output (merge) projection of the attention;
    w1 [H, 2C], b1 [H]: the first layer of the message MLP. Returns, transposed for
    ``x @ W`` and in ``dtype``:
    - ``w_in`` [C, sum(C_p) + H], ``b_in``: the projections and the x-half of the first MLP
      layer (with the merge bias folded in) as one matmul;
    - ``w_msg`` [C, H]: the merge projection folded into the message half, ``W1m @ Wmerge``,
      so that ``hidden = (x @ w_in)[..., -H:] + attention_output @ w_msg`` and
      ``cat([x, message])`` is never built. Derive in float64 for an exact fold."""
    c = w_merge.shape[0]
    w1x, w1m = w1[:, :c], w1[:, c:]
    w_in = torch.cat([w for w, _ in projections] + [w1x], 0)
    b_in = torch.cat([b for _, b in projections] + [b1 + w1m @ b_merge], 0)
    return {"w_in": w_in.t().contiguous().to(dtype), "b_in": b_in.to(dtype),
            "w_msg": (w1m @ w_merge).t().contiguous().to(dtype)}


def add_residual(x: Tensor, hidden: Tensor, w_out: Tensor, b_out: Tensor) -> Tensor:
    """``x += hidden @ w_out + b_out`` in place (the last MLP layer and the residual update).

    x: [T, C] float32; hidden: [T, H] in the compute dtype; w_out: [H, C] in that dtype;
    b_out: [C]. Reduced precisions compute the product in their dtype, then add in float32."""
    if hidden.dtype == torch.float32:
        return x.addmm_(hidden, w_out).add_(b_out)
    return x.add_(torch.addmm(b_out.to(hidden.dtype), hidden, w_out).float())


def mutual_matches(log_p: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The official match rule on a log-assignment ``log_p`` [m, n] (dustbins excluded):
    mutual argmax whose score ``exp(log_p)`` exceeds ``threshold``.

    Returns matches0 [m], scores0 [m], matches1 [n], scores1 [n]: -1 / 0 where unmatched,
    scores in [0, 1]."""
    m, n = log_p.shape
    max0, idx0 = log_p.max(dim=1)
    _, idx1 = log_p.max(dim=0)
    mutual0 = idx1[idx0] == torch.arange(m, device=log_p.device)
    mutual1 = idx0[idx1] == torch.arange(n, device=log_p.device)
    mscores0 = torch.where(mutual0, max0.exp().clamp_(0, 1), 0.0)
    mscores1 = torch.where(mutual1, mscores0[idx1], 0.0)
    valid0 = mutual0 & (mscores0 > threshold)
    valid1 = mutual1 & valid0[idx1]
    return (torch.where(valid0, idx0, -1), torch.where(valid0, mscores0, 0.0),
            torch.where(valid1, idx1, -1), torch.where(valid1, mscores1, 0.0))


class DerivedWeights:
    """Inference weights derived from a module's parameters, cached until one changes.

    ``get(module, dtype, derive)`` returns ``derive(dtype)``, computed again only when a
    parameter or buffer of ``module`` was replaced or modified in place (``load_state_dict``,
    ``.to``, optimiser steps) or ``dtype`` / the device changed. ``key`` identifies the
    current derivation (other caches built on it can compare keys).

    A model built under ``torch.inference_mode`` has inference-tensor parameters, which have
    no version counter: for those only a replaced tensor is noticed (they can be changed in
    place only inside inference mode; ``load_state_dict`` outside it replaces nothing and
    raises)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.key: tuple | None = None

    @staticmethod
    def state_key(module: nn.Module, dtype: torch.dtype) -> tuple:
        tensors = list(module.parameters()) + list(module.buffers())
        device = tensors[0].device if tensors else None
        return (dtype, device) + tuple(
            (t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)

    def get(self, module: nn.Module, dtype: torch.dtype, derive: Callable[[torch.dtype], Any]) -> Any:
        key = self.state_key(module, dtype)
        if self.value is None or self.key != key:
            self.value, self.key = derive(dtype), key
        return self.value


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
