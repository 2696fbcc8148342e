"""LightGlue (Lindenberger, Sarlin, Pollefeys, ICCV 2023), written to be read against the paper.

Each block is an ``nn.Module`` whose ``forward`` is the paper's equation on the tokens of
one image or one pair (channel-last ``[N, 256]``, 4 heads of 64); the parameter names mirror
the official checkpoints. ``run_network`` is the whole network for one pair, with adaptive
depth and width. ``lightglue_packed`` builds the fast engine that ``LightGlue.match_batch``
runs from these same modules; a test checks that both give the same matches.

- positional encoding: ``p = (k - size / 2) / (max(size) / 2)`` (plus scale and orientation
  for SIFT), ``cos(Wr p)`` / ``sin(Wr p)`` with each angle used for a pair of channels, applied
  as ``t * cos + rotate_half(t) * sin`` to the queries and keys of self-attention only;
- ``SelfBlock`` / ``CrossBlock``: ``x <- x + FFN([x | W_out attention(x, source)])`` with
  ``FFN = Linear(512, 512) -> LayerNorm -> GELU -> Linear(512, 256)``; the cross block uses
  one projection for queries and keys and one similarity matrix for both directions;
- ``MatchAssignment``: double softmax of ``final_proj`` similarities scaled by ``256^-1/4``
  each, plus the log matchabilities ``log sigmoid(z)``; dustbins ``log sigmoid(-z)``;
- ``TokenConfidence``: ``sigmoid(Linear(x))``, a token's confidence that its prediction is
  final; after layer ``l`` < 8 a pair stops when ``1 - #{c < lambda_l} / (M + N) >
  depth_confidence``; otherwise, on an image with more points than the pruning minimum, a
  point leaves when its matchability <= ``1 - width_confidence`` and its confidence > lambda_l.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ShapeError
from ..types import Features, Matches
from .attention import attention, mutual_matches

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


def confidence_threshold(layer: int, n_layers: int = N_LAYERS) -> float:
    """lambda_l = clip(0.8 + 0.1 exp(-4 l / L), 0, 1): the token-confidence threshold of layer l."""
    return min(max(0.8 + 0.1 * math.exp(-4.0 * layer / n_layers), 0.0), 1.0)


def official_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An official LightGlue checkpoint in the current key layout: the older layout (DISK's
    file) has ``self_attn.{i}.`` for ``transformers.{i}.self_attn.`` (same for
    ``cross_attn``) and nine scalars ``log_assignment.{i}.r`` (all 1.0, read by no code),
    which are dropped; any other difference is left for the strict load to refuse."""
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


# --------------------------------------------------------------------------- positions
def image_inputs(f: Features, add_scale_ori: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """The network's inputs for one image, float32 on ``device``: descriptors [N, D] and
    positions [N, 2] (or [N, 4] with scale and orientation): keypoints normalised so that
    the long side of the image spans [-1, 1]; for SIFT, the DoG sigma (pixels) and the
    orientation (radians) read from ``Features.lafs``."""
    desc = f.descriptors.to(device, torch.float32)
    if not (torch.isfinite(desc).all() and torch.isfinite(f.keypoints).all()):
        raise ValueError("LightGlue: keypoints and descriptors must be finite")
    w, h = f.image_size
    kp = f.keypoints.to(device, torch.float32)
    size = kp.new_tensor([float(w), float(h)])
    p = (kp - size / 2) / (size.max() / 2)
    if add_scale_ori:
        if f.lafs is None:
            raise ShapeError("LightGlue(features='sift') needs Features.lafs (scale and orientation)")
        from ..geometry.laf import scale_ori_from_lafs
        scales, oris = scale_ori_from_lafs(f.lafs.to(device, torch.float32))
        p = torch.cat([p, scales[:, None], oris[:, None]], -1)
    return desc, p


def rotate_half(t: Tensor) -> Tensor:
    """Each adjacent channel pair (a, b) -> (-b, a): [..., 2k] -> [..., 2k]."""
    a, b = t.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([-b, a], -1).flatten(-2)


def apply_rotary(t: Tensor, encoding: tuple[Tensor, Tensor]) -> Tensor:
    """Rotary encoding ``t * cos + rotate_half(t) * sin``; t [..., N, 64], cos / sin [N, 64]."""
    cos, sin = encoding
    return t * cos + rotate_half(t) * sin


class PositionalEncoding(nn.Module):
    """Learnable Fourier features: ``Wr`` [32, M] maps a position [N, M] to 32 angles."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.Wr = nn.Linear(m, HEAD_DIM // 2, bias=False)
        nn.init.normal_(self.Wr.weight, mean=0.0, std=1.0)

    def forward(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """p [N, M] -> (cos, sin) [N, 64], each angle repeated for its pair of channels."""
        angles = self.Wr(p)
        return torch.cos(angles).repeat_interleave(2, -1), torch.sin(angles).repeat_interleave(2, -1)


# --------------------------------------------------------------------------- transformer
def _ffn() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * DIM, 2 * DIM), nn.LayerNorm(2 * DIM), nn.GELU(),
                         nn.Linear(2 * DIM, DIM))


def split(t: Tensor) -> Tensor:
    """[N, 256] -> [4, N, 64] (heads first)."""
    return t.unflatten(-1, (HEADS, HEAD_DIM)).transpose(0, 1)


def merge(t: Tensor) -> Tensor:
    """[4, N, 64] -> [N, 256]."""
    return t.transpose(0, 1).flatten(1)


class SelfBlock(nn.Module):
    """Self-attention within one image, with rotary positional encoding."""

    def __init__(self) -> None:
        super().__init__()
        self.Wqkv = nn.Linear(DIM, 3 * DIM)    # output channel h * 192 + d * 3 + (0 q, 1 k, 2 v)
        self.out_proj = nn.Linear(DIM, DIM)
        self.ffn = _ffn()

    def forward(self, x: Tensor, encoding: tuple[Tensor, Tensor]) -> Tensor:
        """x [N, 256], encoding (cos, sin) [N, 64] -> [N, 256]."""
        qkv = self.Wqkv(x).unflatten(-1, (HEADS, HEAD_DIM, 3)).transpose(0, 1)   # [4, N, 64, 3]
        q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
        q, k = apply_rotary(q, encoding), apply_rotary(k, encoding)
        message = self.out_proj(merge(attention(q, k, v)))
        return x + self.ffn(torch.cat([x, message], -1))


class CrossBlock(nn.Module):
    """Cross-attention between the two images; queries and keys share one projection, so
    one similarity matrix serves both directions."""

    def __init__(self) -> None:
        super().__init__()
        self.to_qk = nn.Linear(DIM, DIM)
        self.to_v = nn.Linear(DIM, DIM)
        self.to_out = nn.Linear(DIM, DIM)
        self.ffn = _ffn()

    def forward(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """x0 [M, 256], x1 [N, 256] -> updated (x0, x1)."""
        qk0, qk1 = split(self.to_qk(x0)), split(self.to_qk(x1))
        v0, v1 = split(self.to_v(x0)), split(self.to_v(x1))
        sim = qk0 @ qk1.transpose(-1, -2) * HEAD_DIM ** -0.5                  # [4, M, N]
        m0 = self.to_out(merge(sim.softmax(-1) @ v1))
        m1 = self.to_out(merge(sim.transpose(-1, -2).softmax(-1) @ v0))
        return x0 + self.ffn(torch.cat([x0, m0], -1)), x1 + self.ffn(torch.cat([x1, m1], -1))


class TransformerLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = SelfBlock()
        self.cross_attn = CrossBlock()

    def forward(self, x0: Tensor, x1: Tensor, enc0: tuple[Tensor, Tensor], enc1: tuple[Tensor, Tensor]
                ) -> tuple[Tensor, Tensor]:
        return self.cross_attn(self.self_attn(x0, enc0), self.self_attn(x1, enc1))


# --------------------------------------------------------------------------- heads
class MatchAssignment(nn.Module):
    """The soft partial assignment of a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.matchability = nn.Linear(DIM, 1)
        self.final_proj = nn.Linear(DIM, DIM)

    def forward(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x0 [M, 256], x1 [N, 256] -> (log P [M, N], log dustbin0 [M], log dustbin1 [N]):
        ``log P = log_softmax_rows(S) + log_softmax_cols(S) + log sigmoid(z0) + log
        sigmoid(z1)^T`` with ``S = (final_proj(x0) / 256^1/4) (final_proj(x1) / 256^1/4)^T``
        and the matchability logits z; dustbins ``log sigmoid(-z)`` (the official [M + 1, N + 1]
        matrix holds them as its last column / row)."""
        scale = DIM ** -0.25
        sim = (self.final_proj(x0) * scale) @ (self.final_proj(x1) * scale).t()
        z0, z1 = self.matchability(x0)[:, 0], self.matchability(x1)[:, 0]
        certainties = F.logsigmoid(z0)[:, None] + F.logsigmoid(z1)[None, :]
        scores = (F.log_softmax(sim, 1) + F.log_softmax(sim, 0)) + certainties
        return scores, F.logsigmoid(-z0), F.logsigmoid(-z1)

    def get_matchability(self, x: Tensor) -> Tensor:
        """x [N, 256] -> sigmoid(z) [N], the probability that a point has a match."""
        return torch.sigmoid(self.matchability(x))[:, 0]


class TokenConfidence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(DIM, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        """x [N, 256] -> [N] confidence in [0, 1] that each token's prediction is final."""
        return self.token(x.detach())[:, 0]


# --------------------------------------------------------------------------- the network
def run_network(net: nn.Module, desc0: Tensor, pos0: Tensor, desc1: Tensor, pos1: Tensor,
                depth_confidence: float, width_confidence: float, pruning_min: int
                ) -> tuple[Tensor, Tensor, Tensor, int]:
    """LightGlue on one pair, as in the paper.

    net: a module with ``input_proj``, ``posenc``, ``transformers``, ``log_assignment`` and
    ``token_confidence`` (``LightGlue``). desc [N, input_dim], pos [N, M] positional inputs
    (``image_inputs``), float32. depth / width_confidence <= 0 disable early exit /
    pruning; an image is pruned only while it has more than ``pruning_min`` points.
    Returns (log P [m, n] of the exit layer over the m, n points left, their indices
    ind0 [m], ind1 [n] into the inputs, the number of layers run); m or n is 0 when
    pruning removed every point of an image (the log P is then empty)."""
    n0, n1 = desc0.shape[0], desc1.shape[0]
    x0, x1 = net.input_proj(desc0), net.input_proj(desc1)
    enc0, enc1 = net.posenc(pos0), net.posenc(pos1)
    ind0 = torch.arange(n0, device=desc0.device)
    ind1 = torch.arange(n1, device=desc1.device)
    early, prune = depth_confidence > 0, width_confidence > 0
    for i in range(N_LAYERS):
        x0, x1 = net.transformers[i](x0, x1, enc0, enc1)
        if i == N_LAYERS - 1 or not (early or prune):
            continue
        lam = confidence_threshold(i)
        c0 = c1 = None
        if early:  # stop when enough tokens are confident (M + N: the original counts)
            c0, c1 = net.token_confidence[i](x0), net.token_confidence[i](x1)
            if 1.0 - float((torch.cat([c0, c1]) < lam).sum()) / (n0 + n1) > depth_confidence:
                break
        if prune:
            kept = []
            for x, c, enc, ind in ((x0, c0, enc0, ind0), (x1, c1, enc1, ind1)):
                if x.shape[0] > pruning_min:
                    keep = net.log_assignment[i].get_matchability(x) > 1 - width_confidence
                    if c is not None:
                        keep |= c <= lam           # unconfident points are never pruned
                    x, enc, ind = x[keep], (enc[0][keep], enc[1][keep]), ind[keep]
                kept.append((x, enc, ind))
            (x0, enc0, ind0), (x1, enc1, ind1) = kept
            if x0.shape[0] == 0 or x1.shape[0] == 0:
                return x0.new_zeros(x0.shape[0], x1.shape[0]), ind0, ind1, i + 1
    scores, _, _ = net.log_assignment[i](x0, x1)
    return scores, ind0, ind1, i + 1


# --------------------------------------------------------------------------- matches
def to_matches(scores: Tensor, ind0: Tensor, ind1: Tensor, n0: int, n1: int, stop: int, k: int,
               threshold: float) -> Matches:
    """Matches on the CPU from a pair's log P [m, n] over the points left (indices ind0 [m],
    ind1 [n] among n0, n1 keypoints): mutual argmax with score ``exp(log P) > threshold``.
    extras: matches1 [n1], scores1 [n1], stop; with k > 0, candidates [n0, k] (the top-k
    columns of each row, -1 where none) and candidate_scores [n0, k] (their exp(log P))."""
    if scores.numel() == 0:
        return no_matches(n0, n1, stop, k)
    dev = scores.device
    m0, s0, m1, s1 = mutual_matches(scores, threshold)
    matches0 = torch.full((n0,), -1, dtype=torch.long, device=dev)
    scores0 = torch.zeros(n0, device=dev)
    matches1 = torch.full((n1,), -1, dtype=torch.long, device=dev)
    scores1 = torch.zeros(n1, device=dev)
    matches0[ind0] = torch.where(m0 > -1, ind1[m0], -1)
    scores0[ind0] = s0
    matches1[ind1] = torch.where(m1 > -1, ind0[m1], -1)
    scores1[ind1] = s1
    extras = {"matches1": matches1.cpu(), "scores1": scores1.cpu(), "stop": stop}
    if k > 0:
        kk = min(k, scores.shape[1])
        top, col = scores.topk(kk, dim=1)
        cand = torch.full((n0, k), -1, dtype=torch.long, device=dev)
        cand_s = torch.zeros(n0, k, device=dev)
        cand[ind0, :kk] = ind1[col]
        cand_s[ind0, :kk] = top.exp().clamp(0, 1)
        extras["candidates"], extras["candidate_scores"] = cand.cpu(), cand_s.cpu()
    return Matches(matches0.cpu(), scores0.cpu(), extras=extras)


def no_matches(n0: int, n1: int, stop: int, k: int) -> Matches:
    """The result without a match (same extras as ``to_matches``)."""
    extras = {"matches1": torch.full((n1,), -1, dtype=torch.long), "scores1": torch.zeros(n1),
              "stop": stop}
    if k > 0:
        extras["candidates"] = torch.full((n0, k), -1, dtype=torch.long)
        extras["candidate_scores"] = torch.zeros(n0, k)
    return Matches(torch.full((n0,), -1, dtype=torch.long), torch.zeros(n0), extras=extras)
