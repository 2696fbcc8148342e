"""What every matcher offers, and what the pipeline and the benchmarks may rely on.

    matcher(feats0, feats1) -> Matches                        one pair
    matcher.match_batch(pairs, intrinsics=None, gravity=None) several pairs, equal results
    matcher.candidates(feats0, feats1, k) -> (indices, scores) top-k destinations per keypoint
    matcher.capabilities                                      a `MatcherCapabilities` record
    type(matcher).result_neutral_options                      options that change speed only
    matcher.conf["precision"], matcher.compute_dtype()        see matchlab.precision
    matcher.batch_size_for(mean_keypoints) -> int             pairs per match_batch call

A new matcher subclasses `Matcher`, declares `default_conf`, `capabilities`,
`result_neutral_options` and `precisions` (when it computes in more than float32),
`keypoints_per_call` (when it batches pairs in one pass),
implements `forward(feats0, feats1) -> Matches` (or overrides `match_batch` and makes `forward` call it) and `candidates` (or overrides `match_candidates`
when one pass gives both), and gets one line in `matchlab.registry.MATCHERS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..precision import PrecisionOption
from ..types import Features, Matches

Pair = tuple[Features, Features]
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_SIZE = 16


def check_batch_size(value, what: str = "batch_size") -> int | str:
    """`value` if it is "auto" or an int >= 1, else ConfigError naming `what`."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(f"{what} must be 'auto' or an int >= 1, got {value!r}")


@dataclass(frozen=True)
class MatcherCapabilities:
    """What a matcher needs besides two `Features`, and what it gives besides matches.

    needs_intrinsics:  takes per-pair intrinsics (K0, K1 [3, 3], pixels of the original
                       images) through `match_batch(intrinsics=...)`; without them it guesses.
    uses_gravity:      takes per-pair gravity directions (g0, g1 [3], camera coordinates)
                       through `match_batch(gravity=...)`; None means upright.
    needs_frames:      the features must carry local affine frames (`Features.lafs`).
    verifies_geometry: its matches are the inliers of its own robust two-view estimate, so
                       the SfM database takes them as verified (no second RANSAC).
    estimates:         the `TwoViewGeometry.model` types it returns in `Matches.geometry`.
    """

    needs_intrinsics: bool = False
    uses_gravity: bool = False
    needs_frames: bool = False
    verifies_geometry: bool = False
    estimates: tuple[str, ...] = ()


class Matcher(PrecisionOption):
    """Base class of the matchers (see the module docstring for the contract).

    `capabilities` is declared per class; an instance whose options narrow it (e.g. a
    matcher that needs frames only in one mode) sets its own record in `__init__`.
    `result_neutral_options` (declared on `Configurable`) are left out of the record that
    output files keep, so changing them never makes a file's results look foreign.
    `keypoints_per_call`: how many keypoints (both images of every pair, summed) one batched
    pass should hold: past it batching gained nothing and only took memory
    (benchmarks/batch_size.py); None for a matcher that works pair by pair.
    """

    keypoints_per_call: ClassVar[int | None] = None

    @classmethod
    def batch_size_for(cls, mean_keypoints: float) -> int:
        """Pairs per `match_batch` call for images of `mean_keypoints` keypoints on average
        (`--batch-size auto`): keypoints_per_call / (2 x mean_keypoints), within 1 and
        MAX_BATCH_SIZE; DEFAULT_BATCH_SIZE for a matcher that works pair by pair (the batch
        then only sets how many results are written at once)."""
        if cls.keypoints_per_call is None:
            return DEFAULT_BATCH_SIZE
        fits = int(cls.keypoints_per_call // max(2.0 * float(mean_keypoints), 1.0))
        return max(1, min(MAX_BATCH_SIZE, fits))

    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities()

    def match_batch(self, pairs: Sequence[Pair], intrinsics: Sequence[tuple] | None = None,
                    gravity: Sequence[tuple] | None = None) -> list[Matches]:
        """Matches of each pair, equal to matching the pairs one by one.

        intrinsics: one (K0, K1) per pair, gravity: one (g0, g1) per pair (entries may be
        None); each is passed on only to a matcher whose capabilities use it, as keyword
        arguments K0, K1 / gravity0, gravity1 of `forward`. This default runs pair by pair;
        networks override it to share one pass. The same Features object may occur in several
        pairs, so a matcher may cache per-image work by identity."""
        caps = self.capabilities
        out = []
        for i, (f0, f1) in enumerate(pairs):
            inputs = {}
            if caps.needs_intrinsics and intrinsics is not None:
                inputs["K0"], inputs["K1"] = intrinsics[i]
            if caps.uses_gravity and gravity is not None:
                inputs["gravity0"], inputs["gravity1"] = gravity[i]
            out.append(self(f0, f1, **inputs))
        return out

    def candidates(self, feats0: Features, feats1: Features, k: int) -> tuple[Tensor, Tensor]:
        """One-to-many candidates: (indices [N0, k'] into image 1, -1 where none; scores
        [N0, k'] in [0, 1], best first along each row), k' = min(k, N1) or k."""
        if k < 1:
            raise ValueError("k must be >= 1")
        return self.match_candidates([(feats0, feats1)], k)[0][1:]

    def match_candidates(self, pairs: Sequence[Pair], k: int
                         ) -> list[tuple[Matches, Tensor, Tensor]]:
        """Per pair: (the one-to-one Matches, candidate indices, candidate scores) as given
        by `__call__` and `candidates`. Matchers that get both from one pass override this."""
        if type(self).candidates is Matcher.candidates:
            raise NotImplementedError(f"{type(self).__name__} defines neither candidates nor "
                                      "match_candidates")
        return [(self(f0, f1), *self.candidates(f0, f1, k)) for f0, f1 in pairs]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.conf.items())


class NetworkMatcher(Matcher):
    """A matcher whose one pass over several pairs gives their matches and, when asked, the
    top-k candidates of each keypoint (attention networks). Subclasses implement
    `match_pass(pairs, top_k=None) -> list[Matches]`, which puts the candidates in extras
    "candidates" [N0, k] / "candidate_scores" [N0, k] when top_k is given; intrinsics and
    gravity are not used."""

    def forward(self, feats0: Features, feats1: Features) -> Matches:
        """Match two images; Matches on the CPU (extras: see the class)."""
        return self.match_batch([(feats0, feats1)])[0]

    def match_batch(self, pairs: Sequence[Pair], intrinsics: Sequence[tuple] | None = None,
                    gravity: Sequence[tuple] | None = None) -> list[Matches]:
        return self.match_pass(pairs)

    def match_candidates(self, pairs: Sequence[Pair], k: int
                         ) -> list[tuple[Matches, Tensor, Tensor]]:
        return split_candidates(self.match_pass(pairs, top_k=k), k)

    def match_pass(self, pairs: Sequence[Pair], top_k: int | None = None) -> list[Matches]:
        raise NotImplementedError


def split_candidates(results: Sequence[Matches], k: int) -> list[tuple[Matches, Tensor, Tensor]]:
    """(Matches, indices, scores) from results whose extras carry "candidates" /
    "candidate_scores" (a network's top-k pass); a result without them (a side with no
    keypoints) gets [N0, k] of -1 / 0."""
    out = []
    for m in results:
        n0 = m.matches0.shape[0]
        idx = m.extras.get("candidates")
        if idx is None:
            out.append((m, torch.full((n0, k), -1, dtype=torch.long), torch.zeros(n0, k)))
        else:
            out.append((m, idx, m.extras["candidate_scores"]))
    return out
