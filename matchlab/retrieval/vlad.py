"""Training-free global descriptors from local features: VLAD with a vocabulary fitted on the
collection itself (Jégou et al., CVPR 2010; intra-normalisation: Arandjelović & Zisserman,
CVPR 2013).

    vlad = VLAD(num_clusters=64).fit([feats.descriptors for feats in collection])  # k-means
    g = vlad.encode(feats.descriptors)    # [num_clusters * D], unit L2 norm

Encoding of one image with local descriptors x_i [N, D] and centroids c_k [K, D]:
  1. x_i is assigned to its nearest centroid (L2);
  2. v_k = sum over the x_i assigned to k of (x_i - c_k)              -> [K, D];
  3. intra-normalisation: each v_k is divided by its L2 norm (burstiness: one repeated
     structure cannot dominate the descriptor);
  4. signed power normalisation sign(v) |v|^alpha (alpha = `power`; 1 disables it);
  5. flatten and divide by the global L2 norm.
Images without descriptors get the zero vector (similarity 0 to everything).

The vocabulary is fitted by k-means (k-means++ initialisation, Lloyd iterations, seeded) on at
most `max_training` descriptors sampled evenly from the images, so fitting costs the same for
ten images or a million. `save`/`load` keep it (with its options) in a .npz file so that a
collection's descriptors stay comparable across resumed runs. The options here were chosen by
measurement on the labelled mix of sample datasets (matchlab.evaluation.retrieval;
benchmarks/vlad_choices.py prints the comparison, docs/results.md holds the table).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

__all__ = ["VLAD", "kmeans"]


def kmeans(x: Tensor, k: int, iterations: int = 25, seed: int = 0) -> Tensor:
    """Centroids [k, D] of x [N, D] (float32): k-means++ initialisation then Lloyd steps.

    Deterministic for a given seed. Clusters that empty out are re-seeded with the point
    farthest from its centroid. N < k raises ValueError.
    """
    x = x.float()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    gen = torch.Generator().manual_seed(seed)
    sq = (x * x).sum(1)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = [x[first]]
    dist = (sq - 2 * x @ x[first] + sq[first]).clamp_min(0)
    for _ in range(1, k):  # k-means++: sample proportionally to the squared distance
        total = float(dist.sum())
        if total <= 0:
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(dist / total, 1, generator=gen))
        centroids.append(x[idx])
        dist = torch.minimum(dist, (sq - 2 * x @ x[idx] + sq[idx]).clamp_min(0))
    c = torch.stack(centroids)
    for _ in range(iterations):
        d = sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
        assign = d.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        new = sums / counts.clamp_min(1)[:, None].float()
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            far = d.gather(1, assign[:, None]).squeeze(1).argsort(descending=True)
            new[empty] = x[far[:len(empty)]]
        if torch.allclose(new, c):
            c = new
            break
        c = new
    return c


class VLAD:
    """VLAD encoder; `fit` learns the vocabulary, `encode` aggregates one image's descriptors.

    num_clusters: vocabulary size K (descriptor dimension K * D).
    power:        signed power-normalisation exponent (0.5: square root; 1: none).
    intra_norm:   L2-normalise each cluster's residual sum before the power step.
    max_training: descriptors sampled for k-means (evenly over images, seeded).
    iterations, seed: k-means settings.
    """

    default_conf: dict[str, Any] = {
        "num_clusters": 64,
        "power": 0.5,
        "intra_norm": True,
        "max_training": 100_000,
        "iterations": 25,
        "seed": 0,
    }

    def __init__(self, **conf: Any) -> None:
        unknown = sorted(set(conf) - set(self.default_conf))
        if unknown:
            from ..registry import ConfigError

            raise ConfigError(f"VLAD: unknown option(s) {unknown}; valid options are "
                              + ", ".join(f"{k}={v!r}" for k, v in self.default_conf.items()))
        self.conf = {**self.default_conf, **conf}
        self.centroids: Tensor | None = None

    # ------------------------------------------------------------------ vocabulary
    @property
    def dim(self) -> int:
        if self.centroids is None:
            raise RuntimeError("VLAD vocabulary not fitted: call fit() or load() first")
        return int(self.centroids.numel())

    def fit(self, descriptor_sets: Iterable[Tensor | np.ndarray]) -> "VLAD":
        """Fit the vocabulary on the descriptors of a collection ([N_i, D] per image)."""
        sets = [torch.as_tensor(np.asarray(d) if not isinstance(d, Tensor) else d).float()
                for d in descriptor_sets]
        sets = [s for s in sets if s.ndim == 2 and s.shape[0] > 0]
        if not sets:
            raise ValueError("cannot fit a VLAD vocabulary: no image has local descriptors")
        dims = {s.shape[1] for s in sets}
        if len(dims) != 1:
            raise ValueError(f"local descriptors of different sizes {sorted(dims)}")
        total = sum(s.shape[0] for s in sets)
        budget = int(self.conf["max_training"])
        gen = torch.Generator().manual_seed(int(self.conf["seed"]))
        if total > budget:  # the same fraction of every image
            fraction = budget / total
            picked = []
            for s in sets:
                m = max(1, int(round(s.shape[0] * fraction)))
                picked.append(s[torch.randperm(s.shape[0], generator=gen)[:m]])
            sample = torch.cat(picked)
        else:
            sample = torch.cat(sets)
        k = int(self.conf["num_clusters"])
        if sample.shape[0] < k:
            raise ValueError(f"cannot fit {k} VLAD clusters on {sample.shape[0]} local "
                             f"descriptors; use fewer clusters")
        self.centroids = kmeans(sample, k, int(self.conf["iterations"]), int(self.conf["seed"]))
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary and options to a .npz file (atomically)."""
        path = Path(path)
        if self.centroids is None:
            raise RuntimeError("nothing to save: the VLAD vocabulary is not fitted")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, centroids=self.centroids.numpy(),
                 conf=np.array(json.dumps(self.conf, sort_keys=True)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VLAD":
        """A vocabulary written by `save`; any other file is a WeightsError naming it."""
        from zipfile import BadZipFile

        from ..errors import MatchlabError, WeightsError

        try:
            with np.load(path, allow_pickle=False) as data:
                vlad = cls(**json.loads(str(data["conf"])))
                centroids = data["centroids"]
        except (OSError, ValueError, KeyError, TypeError, BadZipFile) as e:
            if isinstance(e, MatchlabError):  # options this version does not know
                raise WeightsError(f"{path}: a VLAD vocabulary of another version: {e}") from e
            reason = str(e).strip("'")
            raise WeightsError(f"{path} is not a VLAD vocabulary written by matchlab "
                               f"({reason})") from e
        if centroids.ndim != 2 or not np.issubdtype(centroids.dtype, np.floating):
            raise WeightsError(f"{path} is not a VLAD vocabulary written by matchlab "
                               f"(centroids of shape {centroids.shape}, {centroids.dtype})")
        vlad.centroids = torch.from_numpy(centroids.astype(np.float32))
        return vlad

    def fingerprint(self) -> str:
        """A short hash of the vocabulary and options (what a descriptor file was made with)."""
        import hashlib

        digest = hashlib.sha256(json.dumps(self.conf, sort_keys=True).encode())
        digest.update(self.centroids.numpy().astype(np.float32).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ encoding
    def encode(self, descriptors: Tensor | np.ndarray) -> Tensor:
        """Local descriptors [N, D] of one image -> VLAD [K * D] float32, unit norm (or zero)."""
        c = self.centroids
        if c is None:
            raise RuntimeError("VLAD vocabulary not fitted: call fit() or load() first")
        x = torch.as_tensor(np.asarray(descriptors) if not isinstance(descriptors, Tensor)
                            else descriptors).float()
        if x.ndim != 2 or (x.shape[0] and x.shape[1] != c.shape[1]):
            raise ValueError(f"expected local descriptors [N, {c.shape[1]}], got "
                             f"{tuple(x.shape)} (a vocabulary fitted on other features?)")
        k, d = c.shape
        if x.shape[0] == 0:
            return torch.zeros(k * d)
        dist = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)[None]
        assign = dist.argmin(1)
        v = torch.zeros(k, d).index_add_(0, assign, x - c[assign])
        if self.conf["intra_norm"]:
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        power = float(self.conf["power"])
        if power != 1.0:
            v = v.sign() * v.abs().pow(power)
        v = v.flatten()
        return v / v.norm().clamp_min(1e-12)

    __call__ = encode
