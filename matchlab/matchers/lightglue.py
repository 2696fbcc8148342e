"""LightGlue (Lindenberger, Sarlin, Pollefeys, ICCV 2023): our implementation, loading the official weights.

Weights. ``disk_lightglue.pth`` and ``aliked_lightglue.pth`` (cvg/LightGlue release v0.1_arxiv)
load unchanged and strictly; ``superpoint_lightglue.pth`` / ``sift_lightglue.pth`` the same way
when the user has them (``weights=<path>`` or the weight cache). The module tree below
(``input_proj``, ``posenc.Wr``, ``transformers.{i}.self_attn.{Wqkv,out_proj,ffn}``,
``transformers.{i}.cross_attn.{to_qk,to_v,to_out,ffn}``, ``log_assignment.{i}.{final_proj,
matchability}``, ``token_confidence.{i}.token.0``) mirrors the current official layout. The one
documented key mapping (``official_state_dict``) handles the older layout of the DISK file:
``self_attn.{i}.`` -> ``transformers.{i}.self_attn.`` (same for ``cross_attn``), and the nine
scalars ``log_assignment.{i}.r`` (all 1.0, read by no code) are dropped; any other difference
is an error.

Inference runs on weights derived once from those modules (re-derived when a parameter
changes), with the official maths:

- positions ``(k - size / 2) / (max(size) / 2)`` (plus raw scale and orientation for SIFT) go
  through ``Wr`` to the rotary angles; ``cos`` / ``sin`` are computed once per image. The
  ``rotate_half`` of q and k is folded into the q / k projection (a signed permutation of its
  rows), so rotary encoding is ``q * cos + q_rot * sin`` on matmul outputs;
- the official ``Wqkv`` output layout (head, dim, q|k|v) is permuted to head-major q | k | v
  blocks, so q, k, v are zero-copy ``[1, 4, n, 64]`` views fed to
  ``scaled_dot_product_attention`` (fused kernel on CPU and GPU: no ``n x m`` attention matrix;
  the cross block runs it once per direction instead of materialising the shared similarity);
- per block, the q/k/v projections and the x-half of the FFN's first layer are one matmul,
  and ``out_proj`` / ``to_out`` is folded into the message half of that layer;
- tokens are *packed*: the tokens of every image of every pair of a batch are rows of one
  ``[T, 256]`` matrix, so each pointwise matmul runs once for the whole batch while attention
  runs per image / pair segment. There is no padding, so point pruning and early exit are
  decided per pair (a pair that exits leaves the batch; pruned points leave it too) and a
  pair's result in a batch is its result alone up to float rounding;
- per-image work (input projection, positional encoding and the whole self block of layer
  0, which sees one image only) is done once per image in a batch (identity of the
  ``Features`` object), and kept across calls for recently seen images.

Adaptive depth / width follow the official rules exactly: after layer ``l`` < 8 a pair stops
when ``1 - #{confidence < lambda_l} / (M + N) > depth_confidence`` (M, N the pair's original
keypoint counts); otherwise a point is pruned when its matchability <= ``1 - width_confidence``
and its confidence > ``lambda_l``, on an image with more points than ``pruning_min_keypoints``.
The assignment is the double-softmax + matchability of the exit layer, filtered by mutual
argmax and ``filter_threshold``.
"""
from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ConfigError
from ..types import Features, Matches, ShapeError
from ..weights import load_checkpoint
from .attention import attention, rotate_half_rows, split_heads
from .base import Matcher, MatcherCapabilities, split_candidates

DIM = 256
HEADS = 4
HEAD_DIM = DIM // HEADS
N_LAYERS = 9
FEATURES: dict[str, dict[str, Any]] = {
    "superpoint": {"input_dim": 256, "add_scale_ori": False, "weights": "superpoint_lightglue.pth"},
    "disk": {"input_dim": 128, "add_scale_ori": False, "weights": "disk_lightglue.pth"},
    "aliked": {"input_dim": 128, "add_scale_ori": False, "weights": "aliked_lightglue.pth"},
    "sift": {"input_dim": 128, "add_scale_ori": True, "weights": "sift_lightglue.pth"},
}
_PRECISIONS = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
               "float16": torch.float16}
# official pruning_keypoint_thresholds: prune only images with more points than this
_PRUNING_MIN = {"cpu": -1, "mps": -1, "cuda": 1536}
_CACHE_IMAGES = 32


def confidence_threshold(layer: int, n_layers: int = N_LAYERS) -> float:
    """lambda_l = clip(0.8 + 0.1 exp(-4 l / L), 0, 1): the token-confidence threshold of layer l."""
    return min(max(0.8 + 0.1 * math.exp(-4.0 * layer / n_layers), 0.0), 1.0)


# --------------------------------------------------------------------------- parameter tree
def _ffn() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * DIM, 2 * DIM), nn.LayerNorm(2 * DIM), nn.GELU(),
                         nn.Linear(2 * DIM, DIM))


class _SelfBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.Wqkv = nn.Linear(DIM, 3 * DIM)
        self.out_proj = nn.Linear(DIM, DIM)
        self.ffn = _ffn()


class _CrossBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_qk = nn.Linear(DIM, DIM)
        self.to_v = nn.Linear(DIM, DIM)
        self.to_out = nn.Linear(DIM, DIM)
        self.ffn = _ffn()


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = _SelfBlock()
        self.cross_attn = _CrossBlock()


class _Assignment(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.matchability = nn.Linear(DIM, 1)
        self.final_proj = nn.Linear(DIM, DIM)


class _TokenConfidence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(DIM, 1), nn.Sigmoid())


class _PositionalEncoding(nn.Module):
    def __init__(self, m: int) -> None:
        super().__init__()
        self.Wr = nn.Linear(m, HEAD_DIM // 2, bias=False)
        nn.init.normal_(self.Wr.weight, mean=0.0, std=1.0)


def official_state_dict(state: dict[str, Tensor], n_layers: int = N_LAYERS) -> dict[str, Tensor]:
    """An official LightGlue checkpoint in the current key layout (see the module docstring)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] in ("self_attn", "cross_attn") and parts[1].isdigit():
            key = ".".join(["transformers", parts[1], parts[0], *parts[2:]])
        elif len(parts) == 3 and parts[0] == "log_assignment" and parts[2] == "r":
            if not torch.all(value == 1):
                raise ValueError(f"{key} = {value.tolist()}: the old-layout scalar is expected "
                                 f"to be 1 (no code reads it)")
            continue
        out[key] = value
    return out


# --------------------------------------------------------------------------- geometry helpers
_ROT = {90: ((0.0, -1.0), (1.0, 0.0)), 180: ((-1.0, 0.0), (0.0, -1.0)), 270: ((0.0, 1.0), (-1.0, 0.0))}


def rotate_features(f: Features, angle: int) -> Features:
    """The features of the image rotated by ``angle`` degrees clockwise (on screen), angle in
    {0, 90, 180, 270}: keypoints (pixel-centre convention), image size and LAFs. Descriptors
    and scores are unchanged (the keypoints keep their order)."""
    angle = int(angle) % 360
    if angle == 0:
        return f
    if angle not in _ROT:
        raise ConfigError(f"rotations must be multiples of 90 degrees, got {angle}")
    w, h = f.image_size
    x, y = f.keypoints[:, 0], f.keypoints[:, 1]
    if angle == 90:
        kp, size = torch.stack([(h - 1) - y, x], -1), (h, w)
    elif angle == 180:
        kp, size = torch.stack([(w - 1) - x, (h - 1) - y], -1), (w, h)
    else:
        kp, size = torch.stack([y, (w - 1) - x], -1), (h, w)
    lafs = None
    if f.lafs is not None:
        r = f.lafs.new_tensor(_ROT[angle])
        lafs = torch.cat([r @ f.lafs[:, :, :2], kp[:, :, None]], -1)
    return Features(kp, f.descriptors, f.scores, size, lafs)


# --------------------------------------------------------------------------- the model
class LightGlue(Matcher):
    """LightGlue matcher: ``matcher(feats0, feats1) -> Matches``.

    Options:
      features: "superpoint" | "disk" | "aliked" | "sift": sets the input projection
                (128-d descriptors for disk/aliked/sift), whether scale and orientation
                are positional inputs (sift: 4-D rotary encoding, read from ``Features.lafs``
                as the DoG sigma and the orientation in radians, COLMAP's convention, as
                kornia's LightGlueMatcher does), and the default weight file.
      weights: "default" (``{features}_lightglue.pth``) | a registered name or a path of a
               state dict in the official layout | None (random initialisation, for tests).
      depth_confidence: 0.95 (early exit; -1 disables).
      width_confidence: 0.99 (point pruning; -1 disables).
      filter_threshold: 0.1: a mutual match is kept if its score exceeds this.
      pruning_min_keypoints: "auto" (official: -1 = always on CPU, 1536 on CUDA) or an int:
               an image is pruned only while it has more points than this.
      precision: "auto" | "float32" | "bfloat16" | "float16": dtype of the transformer's
               matmuls and attention (mixed precision; the residual stream, heads and the
               assignment stay float32). "auto" is float32 on the CPU and float16 on CUDA.
               (CPUs without bf16/fp16 units run the reduced precisions tens of times slower:
               200 keypoints in bfloat16 took minutes on our 2-core CI machine.)
      rotations: angles (multiples of 90, clockwise) tried for image 1: its keypoints are
               rotated before matching, and the rotation with the most matches is kept
               (``extras["rotation"]``). Useful with rotation-invariant descriptors (SIFT).
      top_k: if > 0, ``extras["candidates"]`` / ``["candidate_scores"]`` hold the top-k
               columns of each keypoint's final assignment row ([N0, k], -1 / 0 padding).
      batch_size: pairs per packed pass inside ``match_batch``.
      compile: torch.compile the pointwise parts of the blocks (dynamic shapes).
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "features": "superpoint",
        "weights": "default",
        "depth_confidence": 0.95,
        "width_confidence": 0.99,
        "filter_threshold": 0.1,
        "pruning_min_keypoints": "auto",
        "precision": "auto",
        "rotations": (0,),
        "top_k": 0,
        "batch_size": 8,
        "compile": False,
    }
    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities()
    result_neutral_options: ClassVar[tuple[str, ...]] = ("batch_size", "compile")  # speed only

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        c = self.conf
        if c["features"] not in FEATURES:
            raise ConfigError(f"LightGlue: features must be one of {sorted(FEATURES)}, got {c['features']!r}")
        if c["precision"] not in _PRECISIONS:
            raise ConfigError(f"LightGlue: precision must be one of {sorted(_PRECISIONS)}, "
                              f"got {c['precision']!r}")
        rotations = [int(r) % 360 for r in (c["rotations"] if isinstance(c["rotations"], (list, tuple))
                                            else [c["rotations"]])]
        if not rotations or any(r not in (0, 90, 180, 270) for r in rotations):
            raise ConfigError(f"LightGlue: rotations must be a non-empty list of 0/90/180/270, "
                              f"got {c['rotations']!r}")
        c["rotations"] = tuple(rotations)
        if int(c["top_k"]) < 0 or int(c["batch_size"]) < 1:
            raise ConfigError("LightGlue: top_k must be >= 0 and batch_size >= 1")
        if c["pruning_min_keypoints"] != "auto" and not isinstance(c["pruning_min_keypoints"], int):
            raise ConfigError("LightGlue: pruning_min_keypoints must be 'auto' or an int")
        spec = FEATURES[c["features"]]
        self.input_dim = spec["input_dim"]
        self.add_scale_ori = spec["add_scale_ori"]
        self.input_proj = nn.Linear(self.input_dim, DIM) if self.input_dim != DIM else nn.Identity()
        self.posenc = _PositionalEncoding(4 if self.add_scale_ori else 2)
        self.transformers = nn.ModuleList([_Layer() for _ in range(N_LAYERS)])
        self.log_assignment = nn.ModuleList([_Assignment() for _ in range(N_LAYERS)])
        self.token_confidence = nn.ModuleList([_TokenConfidence() for _ in range(N_LAYERS - 1)])
        self.thresholds = [confidence_threshold(i) for i in range(N_LAYERS)]
        weights = c["weights"]
        if weights is not None:
            name = spec["weights"] if weights == "default" else weights
            self.load_state_dict(official_state_dict(load_checkpoint(name)), strict=True)
        self._fused: dict[str, Any] | None = None
        self._fused_key: tuple | None = None
        self._images: OrderedDict = OrderedDict()
        self._compiled: dict[str, Any] = {}

    # ----------------------------------------------------------------- fused weights
    @property
    def device(self) -> torch.device:
        return self.posenc.Wr.weight.device

    def _state_key(self, dtype: torch.dtype) -> tuple:
        tensors = list(self.parameters()) + list(self.buffers())
        return (dtype, self.device) + tuple((t.data_ptr(), t._version) for t in tensors)

    def fused_weights(self, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """Inference weights derived from the parameters (see the module docstring), cached
        until a parameter changes. Matmul weights are transposed ([C_in, C_out], ``x @ W``)
        and in ``dtype``; derived in float64."""
        key = self._state_key(dtype)
        if self._fused is not None and self._fused_key == key:
            return self._fused
        f64 = torch.float64

        def lin(m: nn.Linear) -> tuple[Tensor, Tensor]:
            return m.weight.detach().to(f64), m.bias.detach().to(f64)

        def ffn_parts(ffn: nn.Sequential, w_out: Tensor, b_out: Tensor) -> dict[str, Tensor]:
            w1, b1 = lin(ffn[0])
            w1x, w1m = w1[:, :DIM], w1[:, DIM:]
            w2, b2 = lin(ffn[3])
            return {"w1x": w1x, "b_hidden": b1 + w1m @ b_out, "w_msg": (w1m @ w_out).t().contiguous().to(dtype),
                    "ln_w": ffn[1].weight.detach().to(dtype), "ln_b": ffn[1].bias.detach().to(dtype),
                    "ln_eps": ffn[1].eps, "w_out": w2.t().contiguous().to(dtype), "b_out": b2.float()}

        selfs, crosses, heads, assign = [], [], [], []
        for i, layer in enumerate(self.transformers):
            blk = layer.self_attn
            w, b = lin(blk.Wqkv)
            # official output channel h * 192 + d * 3 + j (j = q, k, v) -> block j, channel h * 64 + d
            w = w.view(HEADS, HEAD_DIM, 3, DIM).permute(2, 0, 1, 3).reshape(3, DIM, DIM)
            b = b.view(HEADS, HEAD_DIM, 3).permute(2, 0, 1).reshape(3, DIM)
            wo, bo = lin(blk.out_proj)
            parts = ffn_parts(blk.ffn, wo, bo)
            w_in = torch.cat([w[0], rotate_half_rows(w[0], HEADS), w[1], rotate_half_rows(w[1], HEADS),
                              w[2], parts.pop("w1x")], 0)                       # [1792, 256]
            b_in = torch.cat([b[0], rotate_half_rows(b[0], HEADS), b[1], rotate_half_rows(b[1], HEADS),
                              b[2], parts.pop("b_hidden")], 0)
            selfs.append({"w_in": w_in.t().contiguous().to(dtype), "b_in": b_in.to(dtype), **parts})
            blk = layer.cross_attn
            wqk, bqk = lin(blk.to_qk)
            wv, bv = lin(blk.to_v)
            wo, bo = lin(blk.to_out)
            parts = ffn_parts(blk.ffn, wo, bo)
            w_in = torch.cat([wqk, wv, parts.pop("w1x")], 0)                     # [1024, 256]
            b_in = torch.cat([bqk, bv, parts.pop("b_hidden")], 0)
            crosses.append({"w_in": w_in.t().contiguous().to(dtype), "b_in": b_in.to(dtype), **parts})
            la = self.log_assignment[i]
            wf, bf = lin(la.final_proj)
            wm, bm = lin(la.matchability)
            scale = DIM ** -0.25
            assign.append({"w_final": (wf * scale).t().contiguous().float(), "b_final": (bf * scale).float(),
                           "w_match": wm.t().contiguous().float(), "b_match": bm.float()})
            if i < N_LAYERS - 1:
                wt, bt = lin(self.token_confidence[i].token[0])
                heads.append({"w": torch.cat([wt, wm], 0).t().contiguous().float(),
                              "b": torch.cat([bt, bm], 0).float()})
        if isinstance(self.input_proj, nn.Linear):
            proj = (self.input_proj.weight.detach().float(), self.input_proj.bias.detach().float())
        else:
            proj = None
        self._fused = {"self": selfs, "cross": crosses, "heads": heads, "assign": assign,
                       "input_proj": proj, "wr": self.posenc.Wr.weight.detach().float()}
        self._fused_key = key
        self._images.clear()
        return self._fused

    def _compute_dtype(self) -> torch.dtype:
        dtype = _PRECISIONS[self.conf["precision"]]
        if dtype is None:
            return torch.float16 if self.device.type == "cuda" else torch.float32
        return dtype

    def _pruning_min(self) -> int:
        value = self.conf["pruning_min_keypoints"]
        return _PRUNING_MIN.get(self.device.type, -1) if value == "auto" else int(value)

    # ----------------------------------------------------------------- blocks (packed tokens)
    def _pointwise(self, name: str):
        """The post-attention part of a block, compiled when conf['compile'] is set."""
        fn = _ffn_update
        if self.conf["compile"]:
            if name not in self._compiled:
                self._compiled[name] = torch.compile(fn, dynamic=True)
            fn = self._compiled[name]
        return fn

    def _self_block(self, x: Tensor, cos: Tensor, sin: Tensor, segments: list[tuple[int, int]],
                    w: dict, dtype: torch.dtype) -> Tensor:
        """x [T, 256] float32 (updated in place and returned); cos / sin [T, 64] in ``dtype``;
        segments: (start, length) of each image's tokens (attention stays inside one)."""
        t = x.shape[0]
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
        return self._pointwise("self")(x, y[:, 5 * DIM:], ctx, w["w_msg"], w["ln_w"], w["ln_b"],
                                       w["ln_eps"], w["w_out"], w["b_out"])

    def _cross_block(self, x: Tensor, pairs: list[tuple[int, int, int, int]], w: dict,
                     dtype: torch.dtype) -> Tensor:
        """pairs: (start0, n0, start1, n1) of each pair's two images in the packed tokens."""
        t = x.shape[0]
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
        return self._pointwise("cross")(x, y[:, 2 * DIM:], ctx, w["w_msg"], w["ln_w"], w["ln_b"],
                                        w["ln_eps"], w["w_out"], w["b_out"])

    # ----------------------------------------------------------------- per-image work
    def _positions(self, f: Features) -> Tensor:
        """[n, 2] (or [n, 4] for SIFT) float32 positional inputs: normalised keypoints
        (long side -> [-1, 1]) plus, for SIFT, scale (DoG sigma) and orientation (radians)."""
        w, h = f.image_size
        kp = f.keypoints.to(self.device, torch.float32)
        size = kp.new_tensor([float(w), float(h)])
        p = (kp - size / 2) / (size.max() / 2)
        if self.add_scale_ori:
            if f.lafs is None:
                raise ShapeError("LightGlue(features='sift') needs Features.lafs (scale and orientation)")
            from ..geometry.laf import scale_ori_from_lafs
            scales, oris = scale_ori_from_lafs(f.lafs.to(self.device, torch.float32))
            p = torch.cat([p, scales[:, None], oris[:, None]], -1)
        return p

    def _prepare_images(self, images: list[Features], fused: dict, dtype: torch.dtype
                        ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image: (x after layer 0's self block [n, 256] f32, cos [n, 64], sin [n, 64])."""
        out: list[Any] = [None] * len(images)
        todo = []
        for i, f in enumerate(images):
            hit = self._images.get(id(f))
            if hit is not None and hit[0]() is f and hit[1] == self._image_key(f):
                self._images.move_to_end(id(f))
                out[i] = hit[2]
            else:
                todo.append(i)
        if not todo:
            return out
        xs, cs, ss, segments, start = [], [], [], [], 0
        for i in todo:
            f = images[i]
            d = f.descriptors.to(self.device, torch.float32)
            if not (torch.isfinite(d).all() and torch.isfinite(f.keypoints).all()):
                raise ValueError("LightGlue: keypoints and descriptors must be finite")
            if fused["input_proj"] is not None:
                d = F.linear(d, *fused["input_proj"])
            angles = F.linear(self._positions(f), fused["wr"])                  # [n, 32]
            cs.append(torch.cos(angles).repeat_interleave(2, -1))
            ss.append(torch.sin(angles).repeat_interleave(2, -1))
            xs.append(d)
            segments.append((start, len(f)))
            start += len(f)
        x = torch.cat(xs).contiguous()
        cos, sin = torch.cat(cs).to(dtype), torch.cat(ss).to(dtype)
        x = self._self_block(x, cos, sin, segments, fused["self"][0], dtype)
        for i, (s, n) in zip(todo, segments):
            out[i] = (x[s:s + n], cos[s:s + n], sin[s:s + n])
            try:
                ref = weakref.ref(images[i])
            except TypeError:
                continue
            self._images[id(images[i])] = (ref, self._image_key(images[i]), out[i])
            while len(self._images) > _CACHE_IMAGES:
                self._images.popitem(last=False)
        return out

    def _image_key(self, f: Features) -> tuple:
        tensors = [f.keypoints, f.descriptors] + ([f.lafs] if f.lafs is not None else [])
        return (self._fused_key, f.image_size) + tuple(
            (t.data_ptr(), t.shape, t.device, 0 if t.is_inference() else t._version) for t in tensors)

    # ----------------------------------------------------------------- assignment
    @staticmethod
    def _log_assignment(x0: Tensor, x1: Tensor, w: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(scores [m, n] = log double-softmax + log sigmoid(z0) + log sigmoid(z1)^T,
        dustbins log sigmoid(-z0) [m], log sigmoid(-z1) [n]) for one pair."""
        md0 = torch.addmm(w["b_final"], x0, w["w_final"])
        md1 = torch.addmm(w["b_final"], x1, w["w_final"])
        z0 = torch.addmm(w["b_match"], x0, w["w_match"])[:, 0]
        z1 = torch.addmm(w["b_match"], x1, w["w_match"])[:, 0]
        sim = md0 @ md1.t()
        certainties = F.logsigmoid(z0)[:, None] + F.logsigmoid(z1)[None, :]
        scores = (F.log_softmax(sim, 1) + F.log_softmax(sim, 0)) + certainties
        return scores, F.logsigmoid(-z0), F.logsigmoid(-z1)

    def _finish(self, scores: Tensor, ind0: Tensor, ind1: Tensor, n0: int, n1: int,
                stop: int, k: int) -> Matches:
        """Mutual argmax + threshold on a pair's (pruned) score matrix, mapped back to the
        original keypoint indices. Returns Matches on the CPU."""
        dev = scores.device
        m, n = scores.shape
        max0, idx0 = scores.max(1)
        _, idx1 = scores.max(0)
        mutual0 = idx1[idx0] == torch.arange(m, device=dev)
        mutual1 = idx0[idx1] == torch.arange(n, device=dev)
        ms0 = torch.where(mutual0, max0.exp().clamp(0, 1), 0.0)
        valid0 = mutual0 & (ms0 > float(self.conf["filter_threshold"]))
        valid1 = mutual1 & valid0[idx1]
        matches0 = torch.full((n0,), -1, dtype=torch.long, device=dev)
        scores0 = torch.zeros(n0, device=dev)
        matches1 = torch.full((n1,), -1, dtype=torch.long, device=dev)
        scores1 = torch.zeros(n1, device=dev)
        matches0[ind0] = torch.where(valid0, ind1[idx0], -1)
        scores0[ind0] = torch.where(valid0, ms0, 0.0)
        matches1[ind1] = torch.where(valid1, ind0[idx1], -1)
        scores1[ind1] = torch.where(valid1, ms0[idx1], 0.0)
        extras = {"matches1": matches1.cpu(), "scores1": scores1.cpu(), "stop": stop}
        if k > 0:
            kk = min(k, n)
            top, col = scores.topk(kk, dim=1)
            cand = torch.full((n0, k), -1, dtype=torch.long, device=dev)
            cand_s = torch.zeros(n0, k, device=dev)
            cand[ind0, :kk] = ind1[col]
            cand_s[ind0, :kk] = top.exp().clamp(0, 1)
            extras["candidates"], extras["candidate_scores"] = cand.cpu(), cand_s.cpu()
        return Matches(matches0.cpu(), scores0.cpu(), extras=extras)

    def _empty(self, n0: int, n1: int, stop: int, k: int) -> Matches:
        extras = {"matches1": torch.full((n1,), -1, dtype=torch.long), "scores1": torch.zeros(n1),
                  "stop": stop}
        if k > 0:
            extras["candidates"] = torch.full((n0, k), -1, dtype=torch.long)
            extras["candidate_scores"] = torch.zeros(n0, k)
        return Matches(torch.full((n0,), -1, dtype=torch.long), torch.zeros(n0), extras=extras)

    # ----------------------------------------------------------------- the network
    def _run(self, pairs: Sequence[tuple[Features, Features]], k: int) -> list[Matches]:
        """Match pairs (all with >= 1 keypoint per side) in one packed pass."""
        dtype = self._compute_dtype()
        fused = self.fused_weights(dtype)
        dev = self.device
        images: list[Features] = []
        slot: dict[int, int] = {}
        for f0, f1 in pairs:
            for f in (f0, f1):
                if id(f) not in slot:
                    slot[id(f)] = len(images)
                    images.append(f)
        prepared = self._prepare_images(images, fused, dtype)
        xs, cs, ss, inds, segs, start = [], [], [], [], [], 0
        sizes = []
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
        early = float(self.conf["depth_confidence"]) > 0
        prune = float(self.conf["width_confidence"]) > 0
        prune_min = self._pruning_min()
        with torch.autocast(dev.type, enabled=False):
            for i in range(N_LAYERS):
                if i > 0:
                    sides = [(s[0], s[1]) for s in segs] + [(s[2], s[3]) for s in segs]
                    x = self._self_block(x, cos, sin, sides, fused["self"][i], dtype)
                x = self._cross_block(x, segs, fused["cross"][i], dtype)
                if i == N_LAYERS - 1 or not (early or prune):
                    continue
                lam = self.thresholds[i]
                h = torch.addmm(fused["heads"][i]["b"], x, fused["heads"][i]["w"])
                conf, matchability = torch.sigmoid(h[:, 0]), torch.sigmoid(h[:, 1])
                # per side: number of unconfident tokens (one sync for all pairs)
                side_id = torch.repeat_interleave(
                    torch.arange(2 * len(segs), device=dev),
                    torch.tensor([n for s in segs for n in (s[1], s[3])], device=dev))
                unconf = torch.zeros(2 * len(segs), device=dev).index_add_(
                    0, side_id, (conf < lam).float()).view(-1, 2).sum(1).tolist()
                keep = torch.ones(x.shape[0], dtype=torch.bool, device=dev)
                stopped: set[int] = set()
                for row, p in enumerate(active):
                    n0, n1 = sizes[p]
                    s0, c0, s1, c1 = segs[row]
                    if early and 1.0 - unconf[row] / (n0 + n1) > float(self.conf["depth_confidence"]):
                        stopped.add(row)
                        keep[s0:s1 + c1] = False
                        continue
                    if prune:
                        for s, c in ((s0, c0), (s1, c1)):
                            if c > prune_min:
                                sl = slice(s, s + c)
                                kp = matchability[sl] > 1 - float(self.conf["width_confidence"])
                                if early:
                                    kp |= conf[sl] <= lam
                                keep[sl] = kp
                for row in stopped:
                    p = active[row]
                    s0, c0, s1, c1 = segs[row]
                    scores, _, _ = self._log_assignment(x[s0:s0 + c0], x[s1:s1 + c1], fused["assign"][i])
                    results[p] = self._finish(scores, ind[s0:s0 + c0], ind[s1:s1 + c1], *sizes[p], i + 1, k)
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
                        results[p] = self._empty(*sizes[p], i + 1, k)
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
            for row, p in enumerate(active):
                s0, c0, s1, c1 = segs[row]
                scores, _, _ = self._log_assignment(x[s0:s0 + c0], x[s1:s1 + c1], fused["assign"][N_LAYERS - 1])
                results[p] = self._finish(scores, ind[s0:s0 + c0], ind[s1:s1 + c1], *sizes[p], N_LAYERS, k)
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------- API
    def _check(self, f: Features, name: str) -> None:
        if not isinstance(f, Features):
            raise TypeError(f"{name} must be a matchlab.Features, got {type(f).__name__}")
        if f.descriptors.shape[1] != self.input_dim:
            raise ShapeError(f"LightGlue(features={self.conf['features']!r}) needs {self.input_dim}-d "
                             f"descriptors; {name} has {f.descriptors.shape[1]}-d")

    def forward(self, feats0: Features, feats1: Features) -> Matches:
        """Match two images. Returns Matches on the CPU; extras: matches1 [N1], scores1 [N1],
        stop (layers run), rotation (with several rotations), candidates (with top_k)."""
        return self.match_batch([(feats0, feats1)])[0]

    def match_batch(self, pairs: Sequence[tuple[Features, Features]], intrinsics=None, gravity=None
                    ) -> list[Matches]:
        """Match several pairs (see `_match`; intrinsics and gravity are not used)."""
        return self._match(pairs)

    def match_candidates(self, pairs: Sequence[tuple[Features, Features]], k: int
                         ) -> list[tuple[Matches, Tensor, Tensor]]:
        """One pass: the matches and the top-k candidates of each keypoint of image 0 from the
        final log-assignment (scores: its exp, decreasing along each row). Keypoints pruned
        before the last layer get -1 / 0. With several rotations, those of the kept rotation."""
        return split_candidates(self._match(pairs, top_k=k), k)

    @torch.inference_mode()
    def _match(self, pairs: Sequence[tuple[Features, Features]], top_k: int | None = None
               ) -> list[Matches]:
        """Match several pairs; each pair's result equals its result alone (up to float
        rounding): early exit and pruning are decided per pair. Pairs are processed
        ``batch_size`` at a time; per-image work is shared by identity of the Features."""
        k = int(self.conf["top_k"] if top_k is None else top_k)
        for i, (f0, f1) in enumerate(pairs):
            self._check(f0, f"pairs[{i}][0]")
            self._check(f1, f"pairs[{i}][1]")
        rotations = self.conf["rotations"]
        expanded: list[tuple[Features, Features]] = []
        rotated: dict[tuple[int, int], Features] = {}
        for f0, f1 in pairs:
            for r in rotations:
                if (id(f1), r) not in rotated:
                    rotated[(id(f1), r)] = rotate_features(f1, r)
                expanded.append((f0, rotated[(id(f1), r)]))
        out: list[Matches | None] = [None] * len(expanded)
        todo = []
        for j, (f0, f1) in enumerate(expanded):
            if len(f0) == 0 or len(f1) == 0:
                out[j] = self._empty(len(f0), len(f1), 0, k)
            else:
                todo.append(j)
        step = int(self.conf["batch_size"])
        for c in range(0, len(todo), step):
            chunk = todo[c:c + step]
            for j, m in zip(chunk, self._run([expanded[j] for j in chunk], k)):
                out[j] = m
        if len(rotations) == 1:
            return out  # type: ignore[return-value]
        results = []
        for p in range(len(pairs)):
            cands = out[p * len(rotations):(p + 1) * len(rotations)]
            best = max(range(len(rotations)), key=lambda r: (len(cands[r]), -r))
            m = cands[best]
            m.extras["rotation"] = rotations[best]
            m.extras["matches_per_rotation"] = {rotations[r]: len(cands[r]) for r in range(len(rotations))}
            results.append(m)
        return results


def _ffn_update(x: Tensor, hidden: Tensor, ctx: Tensor, w_msg: Tensor, ln_w: Tensor, ln_b: Tensor,
                eps: float, w_out: Tensor, b_out: Tensor) -> Tensor:
    """x += W2 GELU(LN(hidden + ctx @ W_msg)) + b2: the FFN of a block on the cat([x, message])
    input, whose x-half (+ folded biases) is ``hidden`` and whose message half (with the
    output projection folded in) is ``ctx @ w_msg``. x is float32 and updated in place."""
    h = torch.addmm(hidden, ctx, w_msg)
    h = F.gelu(F.layer_norm(h, (h.shape[-1],), ln_w, ln_b, eps))
    if h.dtype == torch.float32:
        return x.addmm_(h, w_out).add_(b_out)
    return x.add_(torch.addmm(b_out.to(h.dtype), h, w_out).float())


def match_rotated_images(extractor, matcher, image0, image1, rotations: Sequence[int] = (0, 90, 180, 270)
                         ) -> tuple[Features, Features, Matches]:
    """Rotation robustness for descriptors that are not rotation invariant (maintainers'
    advice, cvg/LightGlue #18, #64): image 1 is rotated by each angle (degrees, clockwise),
    features are extracted from each rotated copy and matched against image 0 (in one
    ``match_batch`` when the matcher has it, sharing image 0's work), and the rotation with
    the most matches is kept. Returns (feats0, feats1, matches) with feats1's keypoints and
    LAFs mapped back to the frame of the unrotated image 1; ``matches.extras["rotation"]``
    is the kept angle. Any extractor / matcher pair works.
    """
    from ..images import to_tensor

    angles = [int(r) % 360 for r in rotations]
    if not angles or any(r not in (0, 90, 180, 270) for r in angles):
        raise ValueError(f"rotations must be multiples of 90 degrees, got {list(rotations)}")
    feats0 = extractor(image0)
    img1 = to_tensor(image1, grayscale=False)
    feats1 = [extractor(torch.rot90(img1, -r // 90, dims=(1, 2))) for r in angles]  # k < 0: clockwise
    pairs = [(feats0, f) for f in feats1]
    results = (matcher.match_batch(pairs) if hasattr(matcher, "match_batch")
               else [matcher(a, b) for a, b in pairs])
    best = max(range(len(angles)), key=lambda i: (len(results[i]), -i))
    matches = results[best]
    matches.extras["rotation"] = angles[best]
    matches.extras["matches_per_rotation"] = {a: len(m) for a, m in zip(angles, results)}
    return feats0, rotate_features(feats1[best], (360 - angles[best]) % 360), matches
