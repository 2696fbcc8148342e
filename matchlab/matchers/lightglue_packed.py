"""The packed LightGlue engine: the network of ``lightglue_blocks`` for many pairs at once.

It reads the parameters of the same modules (``LightGlue``'s blocks); the attention blocks
run on weights derived from them once (re-derived when a parameter changes, see
``DerivedWeights``), the rest (input projection, positional encoding, confidence and
matchability heads, assignment) calls the modules themselves. The maths is the
blocks' up to float rounding:

- the ``rotate_half`` of q and k is folded into the q / k projection (a signed permutation
  of its rows), so the rotary encoding is ``q * cos + q_rot * sin`` on matmul outputs;
- the official ``Wqkv`` output layout (head, dim, q|k|v) is permuted to head-major q | k | v
  blocks, so q, k, v are zero-copy ``[1, 4, n, 64]`` views fed to
  ``scaled_dot_product_attention`` (no ``n x m`` attention matrix; the cross block runs it
  once per direction instead of materialising the shared similarity);
- per block, the q/k/v projections and the x-half of the FFN's first layer are one matmul,
  and ``out_proj`` / ``to_out`` is folded into the message half of that layer
  (``fuse_attention_layer``, shared with SuperGlue);
- tokens are *packed*: the tokens of every image of every pair of a batch are rows of one
  ``[T, 256]`` matrix, so each pointwise matmul runs once for the whole batch while attention
  runs per image / pair segment. There is no padding, so point pruning and early exit are
  decided per pair (a pair that exits leaves the batch; pruned points leave it too) and a
  pair's result in a batch is its result alone up to float rounding;
- per-image work (input projection, positional encoding and the whole self block of layer
  0, which sees one image only) is done once per image in a batch (identity of the
  ``Features`` object), and kept across calls for recently seen images.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import Features, Matches
from .attention import (DerivedWeights, add_residual, attention, fuse_attention_layer, linear_weight,
                        rotate_half_rows, split_heads)
from .lightglue_blocks import (DIM, HEAD_DIM, HEADS, N_LAYERS, CrossBlock, SelfBlock,
                               confidence_threshold, image_inputs, no_matches, to_matches)

_CACHE_IMAGES = 32


# --------------------------------------------------------------------------- derived weights
def _ffn_weights(ffn: nn.Sequential, dtype: torch.dtype) -> dict[str, Any]:
    """The LayerNorm and last layer of a block's FFN (its first layer is fused elsewhere)."""
    w2, b2 = linear_weight(ffn[3])
    return {"ln_w": ffn[1].weight.detach().to(dtype), "ln_b": ffn[1].bias.detach().to(dtype),
            "ln_eps": ffn[1].eps, "w_out": w2.t().contiguous().to(dtype), "b_out": b2.float()}


def fuse_self_block(blk: SelfBlock, dtype: torch.dtype) -> dict[str, Any]:
    """w_in [256, 1792]: q | rotate_half(q) | k | rotate_half(k) | v | FFN x-half, head-major."""
    w, b = linear_weight(blk.Wqkv)
    # official output channel h * 192 + d * 3 + j (j = q, k, v) -> block j, channel h * 64 + d
    w = w.view(HEADS, HEAD_DIM, 3, DIM).permute(2, 0, 1, 3).reshape(3, DIM, DIM)
    b = b.view(HEADS, HEAD_DIM, 3).permute(2, 0, 1).reshape(3, DIM)
    q, k, v = ((w[j], b[j]) for j in range(3))
    rot = [(rotate_half_rows(t[0], HEADS), rotate_half_rows(t[1], HEADS)) for t in (q, k)]
    w1, b1 = linear_weight(blk.ffn[0])
    return {**fuse_attention_layer([q, rot[0], k, rot[1], v], *linear_weight(blk.out_proj), w1, b1, dtype),
            **_ffn_weights(blk.ffn, dtype)}


def fuse_cross_block(blk: CrossBlock, dtype: torch.dtype) -> dict[str, Any]:
    """w_in [256, 1024]: qk | v | FFN x-half."""
    w1, b1 = linear_weight(blk.ffn[0])
    return {**fuse_attention_layer([linear_weight(blk.to_qk), linear_weight(blk.to_v)],
                                   *linear_weight(blk.to_out), w1, b1, dtype),
            **_ffn_weights(blk.ffn, dtype)}


def ffn_update(x: Tensor, hidden: Tensor, ctx: Tensor, w: dict[str, Any]) -> Tensor:
    """x += W2 GELU(LN(hidden + ctx @ W_msg)) + b2: a block's FFN on cat([x, message]), whose
    x-half (+ folded biases) is ``hidden`` [T, 512] and whose message half (with the output
    projection folded in) is ``ctx @ w_msg``. x [T, 256] float32 is updated in place."""
    h = torch.addmm(hidden, ctx, w["w_msg"])
    h = F.gelu(F.layer_norm(h, (h.shape[-1],), w["ln_w"], w["ln_b"], w["ln_eps"]))
    return add_residual(x, h, w["w_out"], w["b_out"])


# --------------------------------------------------------------------------- packed blocks
def packed_self_block(x: Tensor, cos: Tensor, sin: Tensor, segments: list[tuple[int, int]],
                      w: dict, update: Callable = ffn_update) -> Tensor:
    """x [T, 256] float32 (updated in place and returned); cos / sin [T, 64] in the compute
    dtype; segments: (start, length) of each image's tokens (attention stays inside one)."""
    t, dtype = x.shape[0], w["w_in"].dtype
    y = torch.addmm(w["b_in"], x.to(dtype), w["w_in"])                       # [T, 1792]
    rot = []
    for j in (0, 2):  # q, k: x * cos + rotate_half(x) * sin (rotate_half is in the weights)
        a = y[:, j * DIM:(j + 1) * DIM].view(t, HEADS, HEAD_DIM)
        r = y[:, (j + 1) * DIM:(j + 2) * DIM].view(t, HEADS, HEAD_DIM)
        rot.append(torch.addcmul(a * cos[:, None], r, sin[:, None]).view(1, t, DIM))
    q, k = rot
    v = y[None, :, 4 * DIM:5 * DIM]
    ctx = torch.empty(t, DIM, dtype=dtype, device=x.device)
    for start, n in segments:
        s = slice(start, start + n)
        out = attention(split_heads(q[:, s], HEADS), split_heads(k[:, s], HEADS),
                        split_heads(v[:, s], HEADS))
        ctx[s].view(n, HEADS, HEAD_DIM).copy_(out[0].transpose(0, 1))
    return update(x, y[:, 5 * DIM:], ctx, w)


def packed_cross_block(x: Tensor, pairs: list[tuple[int, int, int, int]], w: dict,
                       update: Callable = ffn_update) -> Tensor:
    """pairs: (start0, n0, start1, n1) of each pair's two images in the packed tokens."""
    t, dtype = x.shape[0], w["w_in"].dtype
    y = torch.addmm(w["b_in"], x.to(dtype), w["w_in"])                       # [T, 1024]
    qk, v = y[None, :, :DIM], y[None, :, DIM:2 * DIM]
    ctx = torch.empty(t, DIM, dtype=dtype, device=x.device)
    for s0, n0, s1, n1 in pairs:
        a, b = slice(s0, s0 + n0), slice(s1, s1 + n1)
        qk0, qk1 = split_heads(qk[:, a], HEADS), split_heads(qk[:, b], HEADS)
        out0 = attention(qk0, qk1, split_heads(v[:, b], HEADS))
        out1 = attention(qk1, qk0, split_heads(v[:, a], HEADS))
        ctx[a].view(n0, HEADS, HEAD_DIM).copy_(out0[0].transpose(0, 1))
        ctx[b].view(n1, HEADS, HEAD_DIM).copy_(out1[0].transpose(0, 1))
    return update(x, y[:, 2 * DIM:], ctx, w)


# --------------------------------------------------------------------------- the engine
class PackedEngine:
    """Runs a ``LightGlue`` module's network on packed batches of pairs.

    Holds only derived state: the fused block weights (``DerivedWeights``), the per-image
    cache and the compiled pointwise functions; the module is passed to each call."""

    def __init__(self, compile: bool = False) -> None:
        self.weights = DerivedWeights()
        self.images: OrderedDict = OrderedDict()
        self.update: Callable = torch.compile(ffn_update, dynamic=True) if compile else ffn_update

    def fused(self, net: nn.Module, dtype: torch.dtype) -> dict[str, list[dict]]:
        """{"self": [...], "cross": [...]}: the fused weights of each layer's blocks."""
        def derive(dt: torch.dtype) -> dict[str, list[dict]]:
            self.images.clear()
            return {"self": [fuse_self_block(layer.self_attn, dt) for layer in net.transformers],
                    "cross": [fuse_cross_block(layer.cross_attn, dt) for layer in net.transformers]}
        return self.weights.get(net, dtype, derive)

    # ----------------------------------------------------------------- per-image work
    def _image_key(self, f: Features) -> tuple:
        tensors = [f.keypoints, f.descriptors] + ([f.lafs] if f.lafs is not None else [])
        return (self.weights.key, f.image_size) + tuple(
            (t.data_ptr(), t.shape, t.device, 0 if t.is_inference() else t._version) for t in tensors)

    def prepare_images(self, net: nn.Module, images: list[Features], fused: dict, dtype: torch.dtype
                       ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image: (x after layer 0's self block [n, 256] f32, cos [n, 64], sin [n, 64])."""
        out: list[Any] = [None] * len(images)
        todo = []
        for i, f in enumerate(images):
            hit = self.images.get(id(f))
            if hit is not None and hit[0]() is f and hit[1] == self._image_key(f):
                self.images.move_to_end(id(f))
                out[i] = hit[2]
            else:
                todo.append(i)
        if not todo:
            return out
        device = net.posenc.Wr.weight.device
        xs, cs, ss, segments, start = [], [], [], [], 0
        for i in todo:
            f = images[i]
            d, p = image_inputs(f, net.add_scale_ori, device)
            cos, sin = net.posenc(p)
            xs.append(net.input_proj(d))
            cs.append(cos)
            ss.append(sin)
            segments.append((start, len(f)))
            start += len(f)
        x = torch.cat(xs).contiguous()
        cos, sin = torch.cat(cs).to(dtype), torch.cat(ss).to(dtype)
        x = packed_self_block(x, cos, sin, segments, fused["self"][0], self.update)
        for i, (s, n) in zip(todo, segments):
            out[i] = (x[s:s + n], cos[s:s + n], sin[s:s + n])
            try:
                ref = weakref.ref(images[i])
            except TypeError:
                continue
            self.images[id(images[i])] = (ref, self._image_key(images[i]), out[i])
            while len(self.images) > _CACHE_IMAGES:
                self.images.popitem(last=False)
        return out

    # ----------------------------------------------------------------- the network
    def run(self, net: nn.Module, pairs: Sequence[tuple[Features, Features]], k: int,
            dtype: torch.dtype, depth_confidence: float, width_confidence: float,
            pruning_min: int, filter_threshold: float) -> list[Matches]:
        """Match pairs (all with >= 1 keypoint per side) in one packed pass; the options are
        those of ``run_network``, k the number of candidates per keypoint (0: none)."""
        fused = self.fused(net, dtype)
        dev = net.posenc.Wr.weight.device
        images: list[Features] = []
        slot: dict[int, int] = {}
        for f0, f1 in pairs:
            for f in (f0, f1):
                if id(f) not in slot:
                    slot[id(f)] = len(images)
                    images.append(f)
        prepared = self.prepare_images(net, images, fused, dtype)
        xs, cs, ss, inds, segs, sizes, start = [], [], [], [], [], [], 0
        for f0, f1 in pairs:
            seg = []
            for f in (f0, f1):
                x, c, s = prepared[slot[id(f)]]
                xs.append(x)
                cs.append(c)
                ss.append(s)
                inds.append(torch.arange(len(f), device=dev))
                seg += [start, len(f)]
                start += len(f)
            segs.append(tuple(seg))
            sizes.append((len(f0), len(f1)))
        x, cos, sin, ind = torch.cat(xs), torch.cat(cs), torch.cat(ss), torch.cat(inds)
        active = list(range(len(pairs)))   # pair ids still running, in packed order
        results: list[Matches | None] = [None] * len(pairs)
        early, prune = depth_confidence > 0, width_confidence > 0

        def finish(row: int, layer: int) -> Matches:
            s0, c0, s1, c1 = segs[row]
            scores, _, _ = net.log_assignment[layer](x[s0:s0 + c0], x[s1:s1 + c1])
            return to_matches(scores, ind[s0:s0 + c0], ind[s1:s1 + c1], *sizes[active[row]],
                              layer + 1, k, filter_threshold)

        with torch.autocast(dev.type, enabled=False):
            for i in range(N_LAYERS):
                if i > 0:
                    sides = [(s[0], s[1]) for s in segs] + [(s[2], s[3]) for s in segs]
                    x = packed_self_block(x, cos, sin, sides, fused["self"][i], self.update)
                x = packed_cross_block(x, segs, fused["cross"][i], self.update)
                if i == N_LAYERS - 1 or not (early or prune):
                    continue
                lam = confidence_threshold(i)
                conf = net.token_confidence[i](x)
                # per side: number of unconfident tokens (one sync for all pairs)
                side_id = torch.repeat_interleave(
                    torch.arange(2 * len(segs), device=dev),
                    torch.tensor([n for s in segs for n in (s[1], s[3])], device=dev))
                unconf = torch.zeros(2 * len(segs), device=dev).index_add_(
                    0, side_id, (conf < lam).float()).view(-1, 2).sum(1).tolist()
                keep = torch.ones(x.shape[0], dtype=torch.bool, device=dev)
                matchability = net.log_assignment[i].get_matchability(x) if prune else None
                stopped: set[int] = set()
                for row, p in enumerate(active):
                    n0, n1 = sizes[p]
                    s0, c0, s1, c1 = segs[row]
                    if early and 1.0 - unconf[row] / (n0 + n1) > depth_confidence:
                        stopped.add(row)
                        keep[s0:s1 + c1] = False
                        continue
                    if prune:
                        for s, c in ((s0, c0), (s1, c1)):
                            if c > pruning_min:
                                sl = slice(s, s + c)
                                kp = matchability[sl] > 1 - width_confidence
                                if early:
                                    kp |= conf[sl] <= lam
                                keep[sl] = kp
                for row in stopped:
                    results[active[row]] = finish(row, i)
                if bool(keep.all()):
                    continue
                counts = torch.zeros(2 * len(segs), dtype=torch.long, device=dev).index_add_(
                    0, side_id, keep.long()).view(-1, 2).tolist()
                new_active, new_segs, start = [], [], 0
                for row, p in enumerate(active):
                    if row in stopped:
                        continue
                    c0, c1 = counts[row]
                    if c0 == 0 or c1 == 0:  # pruning removed a whole side: no matches
                        results[p] = no_matches(*sizes[p], i + 1, k)
                        keep[segs[row][0]:segs[row][2] + segs[row][3]] = False
                        continue
                    new_active.append(p)
                    new_segs.append((start, c0, start + c0, c1))
                    start += c0 + c1
                rows = torch.nonzero(keep)[:, 0]
                x, cos, sin, ind = x[rows], cos[rows], sin[rows], ind[rows]
                active, segs = new_active, new_segs
                if not active:
                    break
            for row in range(len(active)):
                results[active[row]] = finish(row, N_LAYERS - 1)
        return results  # type: ignore[return-value]
