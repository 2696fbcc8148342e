"""SuperGlue (Sarlin et al., CVPR 2020): our implementation, loading the official weights.

Loads ``superglue_indoor.pth`` / ``superglue_outdoor.pth`` (magicleap/SuperGluePretrainedNetwork)
unchanged and strictly: the module tree below (``kenc.encoder.*``, ``gnn.layers.{i}.attn.proj.*``,
``.attn.merge``, ``.mlp.*``, ``final_proj``, ``bin_score``) mirrors the checkpoint. Those
modules only hold the parameters; the forward pass runs on *fused* weights derived from them
once (and re-derived whenever a parameter changes, e.g. after ``load_state_dict`` or ``.to``):

- every 1x1 ``Conv1d`` is a matmul on channel-last tokens ``[B, N, 256]``;
- eval-mode BatchNorms are folded into the preceding layer;
- q / k / v projections and the x-half of the message MLP's first layer are one
  ``256 -> 1280`` matmul; the ``merge`` projection is folded into the message half of that
  first layer (``W1b @ Wmerge``), so ``cat([x, message])`` is never built;
- the official interleaved head layout (channel ``c`` -> ``(d = c // 4, head = c % 4)``) is
  converted to head-major by permuting weight rows/columns, so that q, k, v are zero-copy
  ``[B, 4, N, 64]`` views fed to ``scaled_dot_product_attention`` (fused kernel, no N x M
  attention matrix);
- the tokens of both images (and of all pairs of a batch) go through each pointwise
  matmul together, and the two directions of a layer are computed from the pre-layer
  descriptors, as in the official ``AttentionalGNN``;
- Sinkhorn runs in float32 with log-domain potentials; the kernel ``exp(S - rowmax)`` is
  computed once, and each log-sum-exp of an iteration becomes a matrix-vector product
  against it (see ``log_optimal_transport``); if a sum ever leaves the safe float32 range
  the pair is redone with the plain log-sum-exp iterations (``log_optimal_transport_exact``).

Mathematically this is the official network (up to float rounding): the tests compare it
with a plain transcription of the official maths on real SuperPoint features.

Inference only: BatchNorm always uses its running statistics and no gradients are kept.

Default ``sinkhorn_iterations = 100``: the default of the official ``SuperGlue`` class
(``models/superglue.py``), of the paper (T = 100) and of hloc's SuperGlue wrapper, i.e. what
a user of the network as a library gets. The official evaluation / demo scripts
(``match_pairs.py``, ``demo_superglue.py``) pass ``--sinkhorn_iterations 20`` and hloc's
``match_features`` configs use 50 ('superglue') or 5 ('superglue-fast'): pass
``sinkhorn_iterations=20`` to reproduce the published ``match_pairs.py`` numbers (our
relative-pose evaluation does). Our Sinkhorn costs a matrix-vector product per half
iteration, so the paper's 100 iterations add little to a pair's time instead of
multiplying it.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..registry import ConfigError
from ..types import Features, Matches, ShapeError
from ..weights import load_checkpoint
from .attention import (DerivedWeights, add_residual, attention, conv1x1_weight,
                        fold_batchnorm, fuse_attention_layer, merge_heads, mutual_matches,
                        permute_heads_in, permute_heads_out, split_heads)
from .base import MatcherCapabilities, NetworkMatcher

WEIGHT_FILES = {"indoor": "superglue_indoor.pth", "outdoor": "superglue_outdoor.pth"}
DIM = 256
HEADS = 4
KENC_CHANNELS = [3, 32, 64, 128, 256, 256]
N_LAYERS = 18  # ['self', 'cross'] * 9
# A sum in the matrix-vector Sinkhorn below this is too close to float32 underflow for the
# stabilised products to be trusted (terms < 1.2e-38 lose precision; there are at most a
# few 1e4 of them, so a sum >= 1e-25 is exact to ~1e-9): the pair is redone in log space.
_TINY = 1e-25


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of an enabled torch.autocast for this device type, else None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    except TypeError:  # torch < 2.4: per-backend functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return None


# --------------------------------------------------------------------------- parameter tree
def _mlp(channels: Sequence[int]) -> nn.Sequential:
    """Conv1d(k=1) layers with BatchNorm1d + ReLU between them (the checkpoint's layout)."""
    layers: list[nn.Module] = []
    for i in range(1, len(channels)):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1))
        if i < len(channels) - 1:
            layers += [nn.BatchNorm1d(channels[i]), nn.ReLU()]
    return nn.Sequential(*layers)


class _KeypointEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _mlp(KENC_CHANNELS)


class _MultiHeadAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv1d(DIM, DIM, kernel_size=1) for _ in range(3)])
        self.merge = nn.Conv1d(DIM, DIM, kernel_size=1)


class _PropagationLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _MultiHeadAttention()
        self.mlp = _mlp([2 * DIM, 2 * DIM, DIM])


class _GNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_PropagationLayer() for _ in range(N_LAYERS)])
        self.names = ["self", "cross"] * (N_LAYERS // 2)


# --------------------------------------------------------------------------- Sinkhorn
def _marginals(m: int, n: int) -> tuple[float, float, float]:
    """(norm, log_mu of the dustbin row, log_nu of the dustbin column), official values."""
    norm = -math.log(m + n)
    return norm, math.log(n) + norm, math.log(m) + norm


def log_optimal_transport_exact(scores: Tensor, alpha: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Plain log-space Sinkhorn on the dustbin-augmented couplings (official formulation).

    scores: [m, n] float32 (m, n >= 1); alpha: scalar dustbin score.
    Returns the potentials (u [m + 1], v [n + 1]); the log-assignment is
    ``Z + u[:, None] + v[None] - norm`` with Z the augmented [m + 1, n + 1] couplings.
    """
    m, n = scores.shape
    norm, mu_bin, nu_bin = _marginals(m, n)
    z = scores.new_empty(m + 1, n + 1)
    z[:m, :n] = scores
    z[:m, n] = alpha
    z[m, :] = alpha
    log_mu = scores.new_full((m + 1,), norm)
    log_mu[m] = mu_bin
    log_nu = scores.new_full((n + 1,), norm)
    log_nu[n] = nu_bin
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v[None, :], dim=1)
        v = log_nu - torch.logsumexp(z + u[:, None], dim=0)
    return u, v


def log_optimal_transport(scores: Tensor, alpha: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Log-space Sinkhorn with the dustbin, one matrix-vector product per half iteration.

    Same iterations and fixed point as ``log_optimal_transport_exact`` (the official
    ``log_sinkhorn_iterations``): ``u = log_mu - LSE_j(Z_ij + v_j)``, then
    ``v = log_nu - LSE_i(Z_ij + u_i)``. With ``c_i = max(max_j S_ij, alpha)`` and the kernel
    ``K = exp(S - c)`` (entries in (0, 1], computed once), each log-sum-exp is
    ``c_i + max(v) + log(K @ exp(v - max v) + dustbin term)`` (and symmetrically for the
    columns with ``a = c + u``): every exponent is <= 0, so nothing overflows, and the dense
    work per iteration is two reads of K instead of ~10 passes with an exp per element.
    When a sum falls below 1e-25 (the dominant terms would underflow) the plain log-space
    iterations are run instead, so the result is always the log-space one.

    scores: [m, n] float32 (m, n >= 1); alpha: 0-d tensor. Returns (u [m + 1], v [n + 1]).
    """
    m, n = scores.shape
    norm, mu_bin, nu_bin = _marginals(m, n)
    alpha = alpha.to(scores).reshape(())
    c = torch.maximum(scores.amax(dim=1), alpha)                     # [m]
    kernel = torch.sub(scores, c[:, None]).exp_()                    # [m, n], in (0, 1]
    k_bin = torch.exp(alpha - c)                                     # [m] dustbin column
    v = scores.new_zeros(n)
    v_bin = scores.new_zeros(())
    u = scores.new_zeros(m)
    u_bin = scores.new_zeros(())
    worst = scores.new_ones(())  # smallest sum seen: checked once at the end (no sync per step)
    for _ in range(iters):
        # rows (u): LSE over j of [S_ij + v_j, alpha + v_bin]
        d = torch.maximum(v.max(), v_bin)
        w = torch.exp(v - d)
        r = torch.addmv(k_bin * torch.exp(v_bin - d), kernel, w)  # [m]
        worst = torch.minimum(worst, r.min())
        u = norm - (c + d + torch.log(r))
        u_bin = mu_bin - (alpha + torch.logsumexp(torch.cat([v, v_bin[None]]), 0))
        # columns (v): LSE over i of [S_ij + u_i, alpha + u_bin]
        a = c + u
        e = torch.maximum(a.max(), alpha + u_bin)
        s = torch.addmv(torch.exp(alpha + u_bin - e).expand(n), kernel.t(), torch.exp(a - e))
        worst = torch.minimum(worst, s.min())
        v = norm - (e + torch.log(s))
        v_bin = nu_bin - (alpha + torch.logsumexp(torch.cat([u, u_bin[None]]), 0))
    if not bool(torch.isfinite(worst)) or float(worst) < _TINY:
        return log_optimal_transport_exact(scores, alpha, iters)
    return torch.cat([u, u_bin[None]]), torch.cat([v, v_bin[None]])


def extract_matches(scores: Tensor, u: Tensor, v: Tensor, threshold: float
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mutual-argmax matches from the log-assignment ``scores + u + v - norm`` (official rule).

    scores: [m, n] float32, CONSUMED (overwritten in place); u [m + 1], v [n + 1].
    Returns matches0 [m], scores0 [m], matches1 [n], scores1 [n]: -1 / 0 where unmatched,
    scores in [0, 1] (exp of the log-assignment).
    """
    m, n = scores.shape
    norm = -math.log(m + n)
    return mutual_matches(scores.add_(u[:m, None]).add_(v[None, :n] - norm), threshold)


# --------------------------------------------------------------------------- the model
class SuperGlue(NetworkMatcher):
    """SuperGlue matcher: ``matcher(feats0, feats1) -> Matches``.

    Features must be SuperPoint-like: 256-d descriptors (L2-normalised), detection scores,
    keypoints in ORIGINAL image pixels and ``image_size = (W, H)``; keypoints are
    normalised as in the official code, ``(k - (W/2, H/2)) / (0.7 * max(W, H))``.

    Options:
      weights: "indoor" | "outdoor" | path of a state-dict file in the official layout |
               None (random initialisation, for tests).
      sinkhorn_iterations: 100 (official class default, see the module docstring).
      match_threshold: 0.2 (official): a mutual match is kept if its score exceeds this.
      precision: "auto" | "float32" | "bfloat16" | "float16" (matchlab.precision): dtype of
                 the attention network's matmuls. "auto": on a GPU the dtype of an enclosing
                 torch.autocast if any, else the rule of matchlab.precision (bfloat16 only on
                 hardware with native bfloat16, and only if SuperGlue is in AUTO_BFLOAT16).
                 The residual stream, the final projection, the score matrix and Sinkhorn
                 are always float32, and an enclosing autocast never changes them.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "weights": "indoor",
        "sinkhorn_iterations": 100,
        "match_threshold": 0.2,
    }
    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities()
    result_neutral_options: ClassVar[tuple[str, ...]] = ()  # every option changes results
    precisions: ClassVar[tuple[str, ...]] = ("float32", "bfloat16", "float16")
    # padded batches gained <= 9 % at 512 keypoints and lost 4-5 % at 2,048 (2 CPU cores):
    # one pair of 2,048, two of 1,024, four of 512 a call (benchmarks/batch_size.py)
    keypoints_per_call: ClassVar[int] = 4096

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        if int(self.conf["sinkhorn_iterations"]) < 0:
            raise ConfigError("SuperGlue: sinkhorn_iterations must be >= 0")
        self.kenc = _KeypointEncoder()
        self.gnn = _GNN()
        self.final_proj = nn.Conv1d(DIM, DIM, kernel_size=1)
        self.bin_score = nn.Parameter(torch.tensor(1.0))
        weights = self.conf["weights"]
        if weights is not None:
            name = WEIGHT_FILES.get(str(weights), weights)
            self.load_state_dict(load_checkpoint(name), strict=True)
        self._fused = DerivedWeights()

    # ----------------------------------------------------------------- fused weights
    @property
    def device(self) -> torch.device:
        return self.bin_score.device

    def fused_weights(self, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """The inference weights (see the module docstring), cached until a parameter changes.

        Matmul weights are stored transposed ([C_in, C_out]) for ``x @ W``; biases in float32
        for the float32 parts. Derived in float64, then cast to ``dtype``."""
        return self._fused.get(self, dtype, self._derive)

    def _derive(self, dtype: torch.dtype) -> dict[str, Any]:
        f64 = torch.float64
        kenc = []
        seq = list(self.kenc.encoder)
        i = 0
        while i < len(seq):
            w, b = conv1x1_weight(seq[i], f64)
            relu = False
            if i + 1 < len(seq) and isinstance(seq[i + 1], nn.BatchNorm1d):
                w, b = fold_batchnorm(w, b, seq[i + 1])
                relu, i = True, i + 3
            else:
                i += 1
            kenc.append((w.t().contiguous().float(), b.float(), relu))
        layers = []
        for layer in self.gnn.layers:
            q, k, v = (conv1x1_weight(p, f64) for p in layer.attn.proj)
            q, k, v = (permute_heads_out(w, b, HEADS) for w, b in (q, k, v))
            wm, bm = conv1x1_weight(layer.attn.merge, f64)
            wm = permute_heads_in(wm, HEADS)
            w1, b1 = fold_batchnorm(*conv1x1_weight(layer.mlp[0], f64), layer.mlp[1])
            w2, b2 = conv1x1_weight(layer.mlp[3], f64)
            # w_in [256, 1280]: q | k | v | x-half of the MLP's first layer; w_msg [256, 512]
            layers.append({**fuse_attention_layer([q, k, v], wm, bm, w1, b1, dtype),
                           "w_out": w2.t().contiguous().to(dtype), "b_out": b2.to(dtype)})
        wf, bf = conv1x1_weight(self.final_proj, f64)
        return {"kenc": kenc, "layers": layers, "names": list(self.gnn.names),
                "w_final": wf.t().contiguous().float(), "b_final": bf.float(),
                "bin_score": self.bin_score.detach().float().clone()}

    # ----------------------------------------------------------------- network
    def auto_dtype(self, device: torch.device) -> torch.dtype:
        """"auto": an enclosing autocast's dtype on a GPU, else matchlab.precision's rule."""
        if device.type != "cpu" and _autocast_dtype(device.type) is not None:
            return _autocast_dtype(device.type)
        return super().auto_dtype(device)

    def _encode(self, x: Tensor, kin: Tensor, fused: dict, n0: int,
                mask0: Tensor | None, mask1: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Keypoint encoder + attentional GNN + final projection.

        x: [B, L, 256] float32 descriptors (image 0 tokens in [:, :n0], image 1 after);
        kin: [B, L, 3] normalised (x, y, score). Returns [B, L, 256] float32 matching
        descriptors (final projection applied)."""
        b, length, _ = x.shape
        h = kin.reshape(-1, 3)
        for w, bias, relu in fused["kenc"]:
            h = torch.addmm(bias, h, w)
            if relu:
                h.relu_()
        x = x.reshape(-1, DIM) + h                                  # residual stream, float32
        attn_out = torch.empty(b, length, DIM, dtype=dtype, device=x.device)
        y_buf = torch.empty(b * length, 5 * DIM, dtype=dtype, device=x.device)  # reused per layer
        for layer, name in zip(fused["layers"], fused["names"]):
            # q | k | v | x-half of the message MLP's first layer: one matmul for all tokens
            y = torch.addmm(layer["b_in"], x.to(dtype), layer["w_in"], out=y_buf).view(b, length, -1)
            q = split_heads(y[..., :DIM], HEADS)
            k = split_heads(y[..., DIM:2 * DIM], HEADS)
            v = split_heads(y[..., 2 * DIM:3 * DIM], HEADS)
            s0, s1 = slice(0, n0), slice(n0, length)
            src0, src1, m0, m1 = (s1, s0, mask1, mask0) if name == "cross" else (s0, s1, mask0, mask1)
            merge_heads(attention(q[:, :, s0], k[:, :, src0], v[:, :, src0], m0), attn_out[:, s0])
            merge_heads(attention(q[:, :, s1], k[:, :, src1], v[:, :, src1], m1), attn_out[:, s1])
            # first MLP layer: its x-half (+ folded biases) is already in y; add the message
            # half in place (no cat, no copy), then ReLU in place
            hidden = y[..., 3 * DIM:].view(b * length, 2 * DIM)
            hidden.addmm_(attn_out.view(-1, DIM), layer["w_msg"]).relu_()
            add_residual(x, hidden, layer["w_out"], layer["b_out"])  # both images at once
        return torch.addmm(fused["b_final"], x, fused["w_final"]).view(b, length, DIM)

    # ----------------------------------------------------------------- API
    def _check(self, f: Features, name: str) -> None:
        if not isinstance(f, Features):
            raise TypeError(f"{name} must be a matchlab.Features, got {type(f).__name__}")
        if f.descriptors.shape[1] != DIM:
            raise ShapeError(f"SuperGlue needs {DIM}-d descriptors (SuperPoint); {name} has "
                             f"{f.descriptors.shape[1]}-d")

    @torch.inference_mode()
    def match_pass(self, pairs: Sequence[tuple[Features, Features]], top_k: int | None = None
               ) -> list[Matches]:
        """Match several pairs in one padded pass through the network.

        top_k: also return, in extras "candidates" [N0, k] (indices into image 1, -1 where
        none) and "candidate_scores" [N0, k] (exp of the log-assignment, decreasing along each
        row), the k best columns of each row of the log-assignment (one-to-many pools, as
        LightGlue's `top_k`; used by AffineGlue).

        Tokens are padded to the largest keypoint count on each side and padded keys are
        masked in every attention, so each pair's result equals its result alone (up to
        float rounding of differently sized matmuls). Sinkhorn and match extraction run on
        each pair's unpadded score matrix. Pairs with 0 keypoints on a side get no matches.
        """
        results: list[Matches | None] = [None] * len(pairs)
        todo = []
        for i, (f0, f1) in enumerate(pairs):
            self._check(f0, f"pairs[{i}][0]")
            self._check(f1, f"pairs[{i}][1]")
            if len(f0) == 0 or len(f1) == 0:
                results[i] = Matches(torch.full((len(f0),), -1, dtype=torch.long), torch.zeros(len(f0)),
                                     extras={"matches1": torch.full((len(f1),), -1, dtype=torch.long),
                                             "scores1": torch.zeros(len(f1))})
            else:
                todo.append(i)
        if not todo:
            return results  # type: ignore[return-value]
        dtype = self.compute_dtype()
        fused = self.fused_weights(dtype)
        dev = self.device
        n0s = [len(pairs[i][0]) for i in todo]
        n1s = [len(pairs[i][1]) for i in todo]
        big0, big1 = max(n0s), max(n1s)
        b = len(todo)
        x = torch.zeros(b, big0 + big1, DIM, device=dev)
        kin = torch.zeros(b, big0 + big1, 3, device=dev)
        for row, i in enumerate(todo):
            for side, f in enumerate(pairs[i]):
                start = 0 if side == 0 else big0
                n = len(f)
                w, h = f.image_size
                kp = f.keypoints.to(dev, torch.float32)
                kin[row, start:start + n, :2] = (kp - kp.new_tensor([w / 2, h / 2])) / (0.7 * max(w, h))
                kin[row, start:start + n, 2] = f.scores.to(dev, torch.float32)
                x[row, start:start + n] = f.descriptors.to(dev, torch.float32)
        if not (torch.isfinite(x).all() and torch.isfinite(kin).all()):
            raise ValueError("SuperGlue: keypoints, scores and descriptors must be finite")
        ar0, ar1 = torch.arange(big0, device=dev), torch.arange(big1, device=dev)
        mask0 = None if min(n0s) == big0 else ar0[None] < torch.tensor(n0s, device=dev)[:, None]
        mask1 = None if min(n1s) == big1 else ar1[None] < torch.tensor(n1s, device=dev)[:, None]
        alpha = fused["bin_score"]
        iters = int(self.conf["sinkhorn_iterations"])
        # dtypes are explicit from here on (an enclosing autocast only chose `dtype`)
        with torch.autocast(dev.type, enabled=False):
            mdesc = self._encode(x, kin, fused, big0, mask0, mask1, dtype)
            for row, i in enumerate(todo):
                md0 = mdesc[row, :n0s[row]] * DIM ** -0.5
                md1 = mdesc[row, big0:big0 + n1s[row]]
                scores = md0 @ md1.t()                                    # [n0, n1] float32
                u, v = log_optimal_transport(scores, alpha, iters)
                m0, s0, m1, s1 = extract_matches(scores, u, v, float(self.conf["match_threshold"]))
                extras = {"matches1": m1.cpu(), "scores1": s1.cpu()}
                if top_k:  # extract_matches left the log-assignment in `scores`
                    best = scores.topk(min(int(top_k), n1s[row]), dim=1)
                    extras["candidates"] = best.indices.cpu()
                    extras["candidate_scores"] = best.values.exp().clamp(0, 1).cpu()
                results[i] = Matches(m0.cpu(), s0.cpu(), extras=extras)
        return results  # type: ignore[return-value]
