"""LightGlue (Lindenberger, Sarlin, Pollefeys, ICCV 2023): the matcher, with the official weights.

Three modules: ``lightglue_blocks`` holds the network written against the paper (one
``forward`` per block, ``run_network`` for a pair), ``lightglue_packed`` the fast engine
built from those same modules (packed batches, fused weights), and this one the
``LightGlue`` matcher that owns the parameters, checks its options and runs the engine.
``LightGlue.forward_readable`` runs the readable network (tests check both agree).

Weights. ``disk_lightglue.pth`` and ``aliked_lightglue.pth`` (cvg/LightGlue release v0.1_arxiv)
load unchanged and strictly; ``superpoint_lightglue.pth`` / ``sift_lightglue.pth`` the same way
when the user has them (``weights=<path>`` or the weight cache). The module tree
(``input_proj``, ``posenc.Wr``, ``transformers.{i}.self_attn.{Wqkv,out_proj,ffn}``,
``transformers.{i}.cross_attn.{to_qk,to_v,to_out,ffn}``, ``log_assignment.{i}.{final_proj,
matchability}``, ``token_confidence.{i}.token.0``) mirrors the current official layout; the
one documented key mapping (``official_state_dict``) handles the older layout of the DISK
file, any other difference is an error.

Adaptive depth / width follow the official rules exactly (see ``lightglue_blocks``); the
assignment is the double-softmax + matchability of the exit layer, filtered by mutual
argmax and ``filter_threshold``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..registry import ConfigError
from ..types import Features, Matches, ShapeError
from ..weights import load_checkpoint
from .base import MatcherCapabilities, NetworkMatcher, check_batch_size
from .lightglue_blocks import (DIM, FEATURES, N_LAYERS, MatchAssignment, PositionalEncoding,
                               TokenConfidence, TransformerLayer, image_inputs, no_matches,
                               official_state_dict, run_network, to_matches)
from .lightglue_packed import PackedEngine
from .rotation import ANGLES, rotate_features

# official pruning_keypoint_thresholds: prune only images with more points than this
_PRUNING_MIN = {"cpu": -1, "mps": -1, "cuda": 1536}


class LightGlue(NetworkMatcher):
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
      precision: "auto" | "float32" | "bfloat16" | "float16" (matchlab.precision): dtype of
               the transformer's matmuls and attention (mixed precision; the residual stream,
               heads and the assignment stay float32). "auto" is float16 on CUDA (as the
               official code), elsewhere the rule of matchlab.precision (bfloat16 only on
               hardware with native bfloat16, and only if LightGlue is in AUTO_BFLOAT16).
      rotations: angles (multiples of 90, clockwise) tried for image 1: its keypoints are
               rotated before matching, and the rotation with the most matches is kept
               (``extras["rotation"]``). Useful with rotation-invariant descriptors (SIFT).
      top_k: if > 0, ``extras["candidates"]`` / ``["candidate_scores"]`` hold the top-k
               columns of each keypoint's final assignment row ([N0, k], -1 / 0 padding).
      batch_size: pairs per packed pass inside ``match_batch``, or "auto": as many pairs
               as fit in ``keypoints_per_call`` keypoints (at least one), so a pass holds
               16 pairs of 512 keypoints, 8 of 1,024, 4 of 2,048, 2 of 4,096.
      compile: torch.compile the pointwise parts of the blocks (dynamic shapes).
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "features": "superpoint",
        "weights": "default",
        "depth_confidence": 0.95,
        "width_confidence": 0.99,
        "filter_threshold": 0.1,
        "pruning_min_keypoints": "auto",
        "rotations": (0,),
        "top_k": 0,
        "batch_size": "auto",
        "compile": False,
    }
    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities()
    result_neutral_options: ClassVar[tuple[str, ...]] = ("batch_size", "compile")  # speed only
    precisions: ClassVar[tuple[str, ...]] = ("float32", "bfloat16", "float16")
    # packed passes (2 CPU cores, adaptive, DISK): 8 pairs of 512 keypoints 17 % faster a
    # pair than one by one, 1,024-4,096 within 6 % whatever the batch, while the buffers
    # grow with it: 16 of 4,096 hold ~0.9 GB in one projection (benchmarks/batch_size.py)
    keypoints_per_call: ClassVar[int] = 16384

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        c = self.conf
        if c["features"] not in FEATURES:
            raise ConfigError(f"LightGlue: features must be one of {sorted(FEATURES)}, got {c['features']!r}")
        rotations = [int(r) % 360 for r in (c["rotations"] if isinstance(c["rotations"], (list, tuple))
                                            else [c["rotations"]])]
        if not rotations or any(r not in ANGLES for r in rotations):
            raise ConfigError(f"LightGlue: rotations must be a non-empty list of 0/90/180/270, "
                              f"got {c['rotations']!r}")
        c["rotations"] = tuple(rotations)
        if int(c["top_k"]) < 0:
            raise ConfigError("LightGlue: top_k must be >= 0")
        check_batch_size(c["batch_size"], "LightGlue: batch_size")
        if c["pruning_min_keypoints"] != "auto" and not isinstance(c["pruning_min_keypoints"], int):
            raise ConfigError("LightGlue: pruning_min_keypoints must be 'auto' or an int")
        spec = FEATURES[c["features"]]
        self.input_dim = spec["input_dim"]
        self.add_scale_ori = spec["add_scale_ori"]
        self.input_proj = nn.Linear(self.input_dim, DIM) if self.input_dim != DIM else nn.Identity()
        self.posenc = PositionalEncoding(4 if self.add_scale_ori else 2)
        self.transformers = nn.ModuleList([TransformerLayer() for _ in range(N_LAYERS)])
        self.log_assignment = nn.ModuleList([MatchAssignment() for _ in range(N_LAYERS)])
        self.token_confidence = nn.ModuleList([TokenConfidence() for _ in range(N_LAYERS - 1)])
        weights = c["weights"]
        if weights is not None:
            name = spec["weights"] if weights == "default" else weights
            self.load_state_dict(official_state_dict(load_checkpoint(name)), strict=True)
        self.engine = PackedEngine(compile=bool(c["compile"]))

    @property
    def device(self) -> torch.device:
        return self.posenc.Wr.weight.device

    def auto_dtype(self, device: torch.device) -> torch.dtype:
        """"auto": float16 on CUDA (the official setting), else matchlab.precision's rule."""
        return torch.float16 if device.type == "cuda" else super().auto_dtype(device)

    def _pruning_min(self) -> int:
        value = self.conf["pruning_min_keypoints"]
        return _PRUNING_MIN.get(self.device.type, -1) if value == "auto" else int(value)

    def _options(self) -> dict[str, Any]:
        """The adaptivity options of ``run_network`` / ``PackedEngine.run``."""
        c = self.conf
        return {"depth_confidence": float(c["depth_confidence"]),
                "width_confidence": float(c["width_confidence"]), "pruning_min": self._pruning_min()}

    def _run(self, pairs: Sequence[tuple[Features, Features]], k: int) -> list[Matches]:
        """Match pairs (all with >= 1 keypoint per side) in one packed pass."""
        return self.engine.run(self, pairs, k, self.compute_dtype(), **self._options(),
                               filter_threshold=float(self.conf["filter_threshold"]))

    @torch.inference_mode()
    def forward_readable(self, feats0: Features, feats1: Features, top_k: int = 0) -> Matches:
        """One pair through the readable network (``lightglue_blocks.run_network``), float32,
        image 1 as given (no ``rotations``). Same result as ``forward`` up to float rounding
        (it is the reference the packed engine is tested against)."""
        self._check(feats0, "feats0")
        self._check(feats1, "feats1")
        n0, n1 = len(feats0), len(feats1)
        if n0 == 0 or n1 == 0:
            return no_matches(n0, n1, 0, top_k)
        (desc0, pos0), (desc1, pos1) = (image_inputs(f, self.add_scale_ori, self.device)
                                        for f in (feats0, feats1))
        scores, ind0, ind1, stop = run_network(self, desc0, pos0, desc1, pos1, **self._options())
        return to_matches(scores, ind0, ind1, n0, n1, stop, top_k, float(self.conf["filter_threshold"]))

    # ----------------------------------------------------------------- API
    def _check(self, f: Features, name: str) -> None:
        if not isinstance(f, Features):
            raise TypeError(f"{name} must be a matchlab.Features, got {type(f).__name__}")
        if f.descriptors.shape[1] != self.input_dim:
            raise ShapeError(f"LightGlue(features={self.conf['features']!r}) needs {self.input_dim}-d "
                             f"descriptors; {name} has {f.descriptors.shape[1]}-d")

    def _packs(self, todo: list[int], pairs: list[tuple[Features, Features]]) -> list[list[int]]:
        """`todo` (indices into pairs) cut into packed passes: batch_size pairs each, or
        ("auto") consecutive pairs while their keypoints fit in keypoints_per_call."""
        size = self.conf["batch_size"]
        if size != "auto":
            return [todo[c:c + int(size)] for c in range(0, len(todo), int(size))]
        packs: list[list[int]] = []
        held = 0
        for j in todo:
            n = len(pairs[j][0]) + len(pairs[j][1])
            if not packs or held + n > self.keypoints_per_call:
                packs.append([])
                held = 0
            packs[-1].append(j)
            held += n
        return packs

    @torch.inference_mode()
    def match_pass(self, pairs: Sequence[tuple[Features, Features]], top_k: int | None = None
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
                out[j] = no_matches(len(f0), len(f1), 0, k)
            else:
                todo.append(j)
        for chunk in self._packs(todo, expanded):
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
