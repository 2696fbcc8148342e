"""AffineGlue (Barath et al., arXiv 2307.15381; published as StereoGlue, ECCV 2024): joint
matching and robust estimation from one-to-many affine correspondences. Our implementation.

    matcher = load_matcher("affineglue", base="superglue", base_conf={"weights": "indoor"},
                           model="essential")
    m = matcher(feats0, feats1, K0=K0, K1=K1)        # feats with lafs (see below)
    m.matches0, m.extras["R"], m.extras["t"], m.extras["E"]

1. A base matcher gives each source keypoint a pool of its `pool_size` best destinations:
   - "nn": descriptor cosine similarity (top-k of d0 . d1), scores (cos + 1) / 2;
   - "superglue" / "lightglue": the top-k of each row of the final log-assignment
     (`match_batch(top_k=k)`), candidates with log-assignment < `min_log_assignment` dropped
     (StereoGlue keeps > -20).
   `sources`: "matched" keeps pools only for keypoints the base matcher matched one-to-one
   (StereoGlue's choice), "all" for every keypoint.
2. Affine correspondences: `affines="frames"` (default), A = A1 A0^-1 from the features' local
   affine frames (`Features.lafs`: SIFT's own frames, or `lafs="affnet"` on any extractor);
   `affines="neighbours"`, A fitted (robustly) to the base matcher's matches of the
   `num_neighbours` nearest matched keypoints (`matchlab.geometry.affine.neighbour_affines`;
   no frames needed).
3. `matchlab.geometry.ac_ransac`: hypotheses from single ACs (1AC + gravity solvers), guided
   matching (each source takes the first candidate of its pool consistent with the model),
   local optimisation, final least squares; one-to-one inlier matches.
Output: Matches with only the inlier matches (scores0 = the base matcher's score of the chosen
candidate) and extras: "H" [3, 3] (homography, pixels, x1 ~ H x0) or "E" [3, 3] (normalised
coordinates), "R" [3, 3], "t" [3] (essential; X1 = R X0 + t, |t| = 1); "base_matches0",
"base_scores0" (the base matcher's one-to-one matches, for comparisons); "num_hypotheses".
Float64 tensors. An estimation failure gives no matches and no model keys.

Intrinsics (essential model; optional for the homography's gravity solver): call arguments
K0, K1 ([3, 3], pixels of the ORIGINAL images, i.e. of Features.keypoints), or conf K0 / K1.
Without them a guess is used: focal 1.2 max(W, H), principal point at the image centre
(`matchlab.geometry.affine.default_intrinsics`).
Gravity: down direction in each camera's coordinates (x right, y down, z forward): call
arguments gravity0 / gravity1, or conf; `read_gravity(file)` reads a file of
"image_name gx gy gz" lines (`matchlab match|sfm --gravity FILE`); None = upright camera
(0, 1, 0). The upright prior only seeds
the hypotheses: local optimisation fits general models.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry.ac_ransac import estimate_essential_ac, estimate_homography_ac
from ..geometry.affine import (default_intrinsics, neighbour_affines, pool_affines,  # noqa: F401
                               read_gravity)  # read_gravity: part of this module's API
from ..geometry.scoring import SCORINGS
from ..registry import ConfigError, Configurable, load_matcher, resolve
from ..types import Features, Matches

BASES = ("nn", "superglue", "lightglue")
MODELS = ("homography", "essential")


def nn_candidates(desc0: Tensor, desc1: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Top-k by cosine similarity: (indices [N0, k'], scores (cos + 1) / 2 [N0, k']), k' = min(k, N1)."""
    d0 = torch.nn.functional.normalize(desc0.float(), dim=1)
    d1 = torch.nn.functional.normalize(desc1.float(), dim=1)
    k = min(k, d1.shape[0])
    idx, val = [], []
    for s in range(0, d0.shape[0], chunk):
        best = (d0[s:s + chunk] @ d1.T).topk(k, dim=1)
        idx.append(best.indices)
        val.append(best.values)
    if not idx:
        return torch.zeros((0, k), dtype=torch.long), torch.zeros((0, k))
    return torch.cat(idx), ((torch.cat(val) + 1) / 2).clamp(0, 1)


class AffineGlue(Configurable):
    """`matcher(feats0, feats1, K0=None, K1=None, gravity0=None, gravity1=None) -> Matches`.

    Options: base ("nn" | "superglue" | "lightglue"), base_conf (options of the base matcher),
    features (extractor name, passed to a base that needs it, i.e. LightGlue),
    model ("homography" | "essential"), pool_size (candidates per source), sources
    ("matched" | "all"), min_log_assignment, threshold_px (None: 3 px homography, 1 px
    essential), minimal (homography hypotheses: "auto" = "gravity" when a gravity direction
    is given, else "affine"; "gravity"; "affine"; "both"), K0, K1, gravity0,
    gravity1 (defaults for the call arguments), min_hypotheses, max_hypotheses, confidence,
    lo_iterations, tilt_grid_deg (essential: pitch / roll offsets in degrees tried around the
    gravity prior, e.g. (-45, -30, -15, 0, 15, 30, 45); (0,) trusts the prior),
    lo_ransac_seed (essential, default on: also start LO from pycolmap LO-RANSAC's pose on
    the pools' first candidates, a hypothesis that does not depend on gravity; its effect is
    measured in docs/affineglue.md), scoring
    ("magsac++" | "msac"; see matchlab.geometry.scoring), affines ("frames" | "neighbours"),
    num_neighbours, seed.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "base": "nn",
        "base_conf": None,
        "features": None,
        "model": "homography",
        "pool_size": 3,
        "sources": "matched",
        "min_log_assignment": -20.0,
        "threshold_px": None,
        "minimal": "auto",
        "K0": None,
        "K1": None,
        "gravity0": None,
        "gravity1": None,
        "min_hypotheses": 100,
        "max_hypotheses": 2000,
        "confidence": 0.999,
        "lo_iterations": 20,
        "tilt_grid_deg": (0.0,),
        "lo_ransac_seed": True,
        "scoring": "msac",
        "affines": "frames",
        "num_neighbours": 8,
        "seed": 0,
    }
    needs_intrinsics: ClassVar[bool] = True  # forward accepts K0 / K1
    uses_gravity: ClassVar[bool] = True  # match_batch accepts gravity=[(g0, g1), ...]
    # its matches are the inliers of its robust estimate: `run_sfm` writes them into the
    # COLMAP database as verified two-view geometries instead of re-running RANSAC
    verifies_geometry: ClassVar[bool] = True

    @property
    def needs_frames(self) -> bool:
        """Whether the features must carry local affine frames (`match_pairs` checks up front)."""
        return self.conf["affines"] == "frames"

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        c = self.conf
        if c["base"] not in BASES:
            raise ConfigError(f"AffineGlue: base must be one of {BASES}, got {c['base']!r}")
        if c["model"] not in MODELS:
            raise ConfigError(f"AffineGlue: model must be one of {MODELS}, got {c['model']!r}")
        if c["sources"] not in ("matched", "all"):
            raise ConfigError(f"AffineGlue: sources must be 'matched' or 'all', got {c['sources']!r}")
        if c["minimal"] not in ("auto", "gravity", "affine", "both"):
            raise ConfigError(f"AffineGlue: minimal must be 'auto', 'gravity', 'affine' or 'both', "
                              f"got {c['minimal']!r}")
        if isinstance(c["pool_size"], bool) or not isinstance(c["pool_size"], int) or c["pool_size"] < 1:
            raise ConfigError(f"AffineGlue: pool_size must be an int >= 1, got {c['pool_size']!r}")
        if c["affines"] not in ("frames", "neighbours"):
            raise ConfigError(f"AffineGlue: affines must be 'frames' or 'neighbours', got {c['affines']!r}")
        if c["scoring"] not in SCORINGS:
            raise ConfigError(f"AffineGlue: scoring must be one of {SCORINGS}, got {c['scoring']!r}")
        if c["threshold_px"] is not None and not float(c["threshold_px"]) > 0:
            raise ConfigError(f"AffineGlue: threshold_px must be > 0, got {c['threshold_px']!r}")
        base_conf = dict(c["base_conf"] or {})
        if c["features"] is not None and "features" in resolve("matcher", c["base"]).default_conf:
            base_conf.setdefault("features", c["features"])  # LightGlue's weights
        # (not for_features: the extractor's one-to-one defaults, e.g. SIFT's ratio test,
        # would thin out the pools' sources)
        self.base = load_matcher(c["base"], **base_conf)

    # ----------------------------------------------------------------- pools
    def _pools(self, pairs: Sequence[tuple[Features, Features]]) -> list[tuple[Tensor, Tensor, Matches]]:
        """Per pair: (candidates [N0, k] (-1 empty), scores [N0, k], the base's Matches)."""
        k = int(self.conf["pool_size"])
        if self.conf["base"] == "nn":
            out = []
            for f0, f1 in pairs:
                base = self.base(f0, f1)
                if len(f0) == 0 or len(f1) == 0:
                    out.append((torch.full((len(f0), k), -1), torch.zeros(len(f0), k), base))
                    continue
                idx, sc = nn_candidates(f0.descriptors, f1.descriptors, k)
                out.append((idx, sc, base))
            return out
        results = self.base.match_batch(list(pairs), top_k=k)
        out = []
        floor = float(np.exp(self.conf["min_log_assignment"]))
        for (f0, _), m in zip(pairs, results):
            idx = m.extras.get("candidates")
            sc = m.extras.get("candidate_scores")
            if idx is None:
                idx, sc = torch.full((len(f0), k), -1), torch.zeros(len(f0), k)
            idx = torch.where(sc > floor, idx, -1)
            out.append((idx, sc, m))
        return out

    # ----------------------------------------------------------------- API
    def forward(self, feats0: Features, feats1: Features, K0=None, K1=None,
                gravity0=None, gravity1=None) -> Matches:
        """Match two images with affine frames; see the module docstring for the outputs."""
        return self.match_batch([(feats0, feats1)], intrinsics=[(K0, K1)],
                                gravity=[(gravity0, gravity1)])[0]

    @torch.inference_mode()
    def match_batch(self, pairs: Sequence[tuple[Features, Features]],
                    intrinsics: Sequence[tuple] | None = None,
                    gravity: Sequence[tuple] | None = None) -> list[Matches]:
        """Match several pairs (the base network runs batched); intrinsics / gravity: one
        (K0, K1) / (g0, g1) per pair, None entries falling back to the conf."""
        for i, (f0, f1) in enumerate(pairs):
            for side, f in enumerate((f0, f1)):
                if not isinstance(f, Features):
                    raise TypeError(f"pairs[{i}][{side}] must be a matchlab.Features")
                if f.lafs is None and len(f) > 0 and self.needs_frames:
                    raise ValueError(
                        f"AffineGlue needs local affine frames: pairs[{i}][{side}] has lafs=None. "
                        "Extract with lafs='affnet' (e.g. load_extractor('superpoint', "
                        "lafs='affnet')) or use SIFT, whose frames come with its keypoints, or "
                        "fit the ACs to matched neighbours (affines='neighbours').")
        pools = self._pools(pairs)
        out = []
        for i, ((f0, f1), (cand, cscores, base)) in enumerate(zip(pairs, pools)):
            Ks = intrinsics[i] if intrinsics is not None else (None, None)
            gs = gravity[i] if gravity is not None else (None, None)
            out.append(self._estimate(f0, f1, cand, cscores, base, Ks, gs))
        return out

    def _estimate(self, f0: Features, f1: Features, cand: Tensor, cscores: Tensor, base: Matches,
                  Ks: tuple, gs: tuple) -> Matches:
        c = self.conf
        n0 = len(f0)
        result = Matches.empty(n0)
        result.extras.update({"base_matches0": base.matches0.cpu(), "base_scores0": base.scores0.cpu(),
                              "num_hypotheses": 0})
        if n0 == 0 or len(f1) == 0:
            return result
        cand = cand.cpu().numpy().astype(np.int64)
        cscores = cscores.cpu().numpy().astype(np.float64)
        if c["sources"] == "matched":
            cand = np.where((base.matches0.cpu().numpy() > -1)[:, None], cand, -1)
        if c["affines"] == "frames":
            acs = pool_affines(f0.lafs.cpu().numpy(), f1.lafs.cpu().numpy(), cand)
        else:
            acs = neighbour_affines(f0.keypoints.cpu().numpy(), f1.keypoints.cpu().numpy(),
                                    base.matches0.cpu().numpy(), cand, int(c["num_neighbours"]))
        K0 = Ks[0] if Ks[0] is not None else c["K0"]
        K1 = Ks[1] if Ks[1] is not None else c["K1"]
        g0 = gs[0] if gs[0] is not None else c["gravity0"]
        g1 = gs[1] if gs[1] is not None else c["gravity1"]
        common = dict(gravity0=g0, gravity1=g1, min_hypotheses=c["min_hypotheses"],
                      max_hypotheses=c["max_hypotheses"], confidence=c["confidence"],
                      lo_iterations=c["lo_iterations"], scoring=c["scoring"], seed=c["seed"])
        kp0 = f0.keypoints.cpu().numpy().astype(np.float64)
        kp1 = f1.keypoints.cpu().numpy().astype(np.float64)
        if c["model"] == "homography":
            est = estimate_homography_ac(
                kp0, kp1, cand, acs, cscores, threshold_px=float(c["threshold_px"] or 3.0),
                minimal=c["minimal"], K0=K0, K1=K1, image_size0=f0.image_size,
                image_size1=f1.image_size, **common)
        else:
            K0 = default_intrinsics(f0.image_size) if K0 is None else K0
            K1 = default_intrinsics(f1.image_size) if K1 is None else K1
            est = estimate_essential_ac(kp0, kp1, cand, acs, K0, K1, cscores,
                                        threshold_px=float(c["threshold_px"] or 1.0),
                                        tilt_grid_deg=tuple(c["tilt_grid_deg"]),
                                        lo_ransac_seed=bool(c["lo_ransac_seed"]), **common)
        if est is None:
            return result
        src, dst = est.matches[:, 0], est.matches[:, 1]
        slot = np.argmax(cand[src] == dst[:, None], axis=1)
        result.matches0[torch.from_numpy(src)] = torch.from_numpy(dst)
        result.scores0[torch.from_numpy(src)] = torch.from_numpy(cscores[src, slot]).float()
        extras = result.extras
        extras["num_hypotheses"] = est.hypotheses
        extras["residuals0"] = torch.full((n0,), float("nan"), dtype=torch.float64)
        extras["residuals0"][torch.from_numpy(src)] = torch.from_numpy(est.residuals)
        if c["model"] == "homography":
            extras["H"] = torch.from_numpy(est.model)
        else:
            extras["E"] = torch.from_numpy(est.model)
            extras["R"] = torch.from_numpy(est.R)
            extras["t"] = torch.from_numpy(est.t)
        return result

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.conf.items())
