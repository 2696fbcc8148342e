"""A plain transcription of the official SuperGlue maths: the reference for matchlab's
SuperGlue in tests/matchers/test_superglue.py and the baseline of benchmarks/matchers.py.

Conv1d layers on [B, C, N], einsum attention in the official interleaved [B, 64, 4, N] head
layout, explicit softmax, ``cat([x, message])``, BatchNorm modules and the log-sum-exp
Sinkhorn on the dustbin-augmented matrix; the parameter names are the checkpoint's, so the
official weights load strictly.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def plain_mlp(channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(1, len(channels)):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1))
        if i < len(channels) - 1:
            layers += [nn.BatchNorm1d(channels[i]), nn.ReLU()]
    return nn.Sequential(*layers)


class PlainKeypointEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = plain_mlp([3, 32, 64, 128, 256, 256])

    def forward(self, kpts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # kpts [B, N, 2] normalised, scores [B, N] -> [B, 256, N]
        return self.encoder(torch.cat([kpts.transpose(1, 2), scores[:, None]], dim=1))


class PlainAttention(nn.Module):
    def __init__(self, heads: int = 4, dim: int = 256) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.proj = nn.ModuleList([nn.Conv1d(dim, dim, kernel_size=1) for _ in range(3)])
        self.merge = nn.Conv1d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        # channel c of a projection is dimension c // heads of head c % heads
        q, k, v = (proj(t).view(b, self.head_dim, self.heads, -1)
                   for proj, t in zip(self.proj, (x, source, source)))
        sim = torch.einsum("bdhn,bdhm->bhnm", q, k) / self.head_dim ** 0.5
        prob = torch.softmax(sim, dim=-1)
        out = torch.einsum("bhnm,bdhm->bdhn", prob, v)
        return self.merge(out.contiguous().view(b, self.head_dim * self.heads, -1))


class PlainLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = PlainAttention()
        self.mlp = plain_mlp([512, 512, 256])

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, self.attn(x, source)], dim=1))


class PlainGNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([PlainLayer() for _ in range(18)])
        self.names = ["self", "cross"] * 9

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer, name in zip(self.layers, self.names):
            s0, s1 = (d1, d0) if name == "cross" else (d0, d1)
            delta0, delta1 = layer(d0, s0), layer(d1, s1)
            d0, d1 = d0 + delta0, d1 + delta1
        return d0, d1


def plain_log_optimal_transport(scores: torch.Tensor, alpha: torch.Tensor, iters: int) -> torch.Tensor:
    """[B, M, N] scores -> [B, M+1, N+1] log-assignment (times M+N), plain log-space Sinkhorn."""
    b, m, n = scores.shape
    couplings = torch.cat([torch.cat([scores, alpha.expand(b, m, 1)], -1),
                           torch.cat([alpha.expand(b, 1, n), alpha.expand(b, 1, 1)], -1)], 1)
    norm = -math.log(m + n)
    log_mu = torch.cat([scores.new_full((m,), norm), scores.new_tensor([math.log(n) + norm])])
    log_nu = torch.cat([scores.new_full((n,), norm), scores.new_tensor([math.log(m) + norm])])
    log_mu, log_nu = log_mu[None].expand(b, -1), log_nu[None].expand(b, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :] - norm


class PlainSuperGlue(nn.Module):
    """Straightforward SuperGlue (official maths and parameter names), batch of one pair."""

    def __init__(self, weights: str | None = "indoor", sinkhorn_iterations: int = 100,
                 match_threshold: float = 0.2) -> None:
        super().__init__()
        self.kenc = PlainKeypointEncoder()
        self.gnn = PlainGNN()
        self.final_proj = nn.Conv1d(256, 256, kernel_size=1)
        self.bin_score = nn.Parameter(torch.tensor(1.0))
        self.sinkhorn_iterations = sinkhorn_iterations
        self.match_threshold = match_threshold
        if weights is not None:
            from matchlab.weights import load_checkpoint
            name = {"indoor": "superglue_indoor.pth", "outdoor": "superglue_outdoor.pth"}.get(weights, weights)
            self.load_state_dict(load_checkpoint(name), strict=True)
        self.eval()

    @staticmethod
    def normalize(kpts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        w, h = size
        return (kpts - kpts.new_tensor([w / 2, h / 2])) / (0.7 * max(w, h))

    @torch.inference_mode()
    def forward(self, f0, f1) -> dict[str, torch.Tensor]:
        """f0, f1: matchlab Features. Returns matches0 [N0], scores0 [N0] (0 where unmatched)."""
        n0, n1 = len(f0), len(f1)
        if n0 == 0 or n1 == 0:
            return {"matches0": torch.full((n0,), -1, dtype=torch.long), "scores0": torch.zeros(n0)}
        dev = self.bin_score.device
        k0 = self.normalize(f0.keypoints.to(dev)[None], f0.image_size)
        k1 = self.normalize(f1.keypoints.to(dev)[None], f1.image_size)
        d0 = f0.descriptors.to(dev).t()[None] + self.kenc(k0, f0.scores.to(dev)[None])
        d1 = f1.descriptors.to(dev).t()[None] + self.kenc(k1, f1.scores.to(dev)[None])
        d0, d1 = self.gnn(d0, d1)
        m0, m1 = self.final_proj(d0), self.final_proj(d1)
        scores = torch.einsum("bdn,bdm->bnm", m0, m1) / 256 ** 0.5
        scores = plain_log_optimal_transport(scores, self.bin_score, self.sinkhorn_iterations)
        inner = scores[:, :-1, :-1]
        max0, max1 = inner.max(2), inner.max(1)
        idx0, idx1 = max0.indices, max1.indices
        mutual0 = torch.arange(n0, device=dev)[None] == idx1.gather(1, idx0)
        mscores0 = torch.where(mutual0, max0.values.exp(), scores.new_tensor(0))
        valid0 = mutual0 & (mscores0 > self.match_threshold)
        return {"matches0": torch.where(valid0, idx0, -1)[0].cpu(),
                "scores0": torch.where(valid0, mscores0, 0.0)[0].cpu()}
