"""AffineGlue (Barath et al., arXiv 2307.15381; published as StereoGlue, ECCV 2024): joint
matching and robust estimation from one-to-many affine correspondences. Our implementation.

    matcher = load_matcher("affineglue", base="superglue", base_conf={"weights": "indoor"},
                           model="essential")
    m = matcher(feats0, feats1, K0=K0, K1=K1)        # feats with lafs (see below)
    m.matches0, m.geometry.matrix, m.geometry.R, m.geometry.t

1. A base matcher gives each source keypoint a pool of its `pool_size` best destinations, its
   `match_candidates` (any `matchlab.matchers.base.Matcher`):
   - "nn": descriptor cosine similarity (top-k of d0 . d1), scores (cos + 1) / 2;
   - "superglue" / "lightglue": the top-k of each row of the final log-assignment.
   Candidates with a score <= exp(`min_log_assignment`) are dropped (StereoGlue keeps
   log-assignments > -20).
   `sources`: "matched" keeps pools only for keypoints the base matcher matched one-to-one
   (StereoGlue's choice), "all" for every keypoint.
2. Affine correspondences: `affines="frames"` (default), A = A1 A0^-1 from the features' local
   affine frames (`Features.lafs`: SIFT's own frames, or `lafs="affnet"` on any extractor);
   `affines="neighbours"`, A fitted (robustly) to the base matcher's matches of the
   `num_neighbours` nearest matched keypoints (`matchlab.geometry.primitives.affine.neighbour_affines`;
   no frames needed).
3. `matchlab.geometry.robust.ac_ransac`: hypotheses from single ACs (1AC + gravity solvers), guided
   matching (each source takes the first candidate of its pool consistent with the model),
   local optimisation, final least squares; one-to-one inlier matches.
Output: Matches with only the inlier matches (scores0 = the base matcher's score of the chosen
candidate) and `geometry`, a `TwoViewGeometry`: model "homography" (matrix [3, 3], pixels,
x1 ~ H x0) or "essential" (matrix [3, 3] in normalised coordinates, R [3, 3], t [3] with
X1 = R X0 + t, |t| = 1), inliers [N0] (the matched keypoints), float64. Diagnostics in extras:
"base_matches0", "base_scores0" (the base matcher's one-to-one matches, for comparisons),
"num_hypotheses", "residuals0" [N0]. An estimation failure gives no matches and geometry None.

Intrinsics (essential model; optional for the homography's gravity solver): call arguments
K0, K1 ([3, 3], pixels of the ORIGINAL images, i.e. of Features.keypoints), or conf K0 / K1.
Without them a guess is used: focal 1.2 max(W, H), principal point at the image centre
(`matchlab.geometry.primitives.camera.default_intrinsics`).
Gravity: down direction in each camera's coordinates (x right, y down, z forward): call
arguments gravity0 / gravity1, or conf; `matchlab.io.gravity.read_gravity(file)` reads a file of
"image_name gx gy gz" lines (`matchlab match|sfm --gravity FILE`); None = upright camera
(0, 1, 0). The upright prior only seeds
the hypotheses: local optimisation fits general models.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry.primitives.affine import neighbour_affines, pool_affines
from ..geometry.primitives.camera import default_intrinsics
from ..geometry.robust.ac_ransac import estimate_essential_ac, estimate_homography_ac
from ..geometry.robust.scoring import SCORINGS
from ..registry import ConfigError, load_matcher, resolve
from ..types import Features, Matches, TwoViewGeometry
from .base import Matcher, MatcherCapabilities

MODELS = ("homography", "essential")


class AffineGlue(Matcher):
    """`matcher(feats0, feats1, K0=None, K1=None, gravity0=None, gravity1=None) -> Matches`.

    Options: base (another registered matcher: "nn", "superglue", "lightglue", ...),
    base_conf (options of the base matcher), precision (passed to the base unless base_conf
    sets it: the pools come from the base network, AffineGlue's own geometry is float64),
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
    ("magsac++" | "msac"; see matchlab.geometry.robust.scoring), affines ("frames" | "neighbours"),
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
    # its matches are the inliers of its robust estimate: `run_sfm` writes them into the
    # COLMAP database as verified two-view geometries instead of re-running RANSAC; an
    # instance narrows `needs_frames` and `estimates` to its `affines` and `model` options
    capabilities: ClassVar[MatcherCapabilities] = MatcherCapabilities(
        needs_intrinsics=True, uses_gravity=True, needs_frames=True, verifies_geometry=True,
        estimates=MODELS)
    result_neutral_options: ClassVar[tuple[str, ...]] = ()  # every option changes results
    precisions: ClassVar[tuple[str, ...]] = ("float32", "bfloat16", "float16")  # the base's

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        c = self.conf
        if c["base"] == "affineglue":
            raise ConfigError("AffineGlue: base must be another matcher, e.g. 'nn' or 'lightglue'")
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
        self.capabilities = replace(type(self).capabilities, estimates=(c["model"],),
                                    needs_frames=c["affines"] == "frames")
        base_conf = dict(c["base_conf"] or {})
        if c["features"] is not None and "features" in resolve("matcher", c["base"]).default_conf:
            base_conf.setdefault("features", c["features"])  # LightGlue's weights
        base_conf.setdefault("precision", c["precision"])  # the base says which it supports
        # (not for_features: the extractor's one-to-one defaults, e.g. SIFT's ratio test,
        # would thin out the pools' sources)
        self.base = load_matcher(c["base"], **base_conf)

    def compute_dtype(self) -> torch.dtype:
        """The base matcher's (its network is all that runs in reduced precision)."""
        return self.base.compute_dtype()

    # ----------------------------------------------------------------- pools
    def _pools(self, pairs: Sequence[tuple[Features, Features]]) -> list[tuple[Tensor, Tensor, Matches]]:
        """Per pair: (candidates [N0, k] (-1 empty), scores [N0, k], the base's Matches)."""
        floor = float(np.exp(self.conf["min_log_assignment"]))
        return [(torch.where(sc > floor, idx, -1), sc, base) for base, idx, sc in
                self.base.match_candidates(list(pairs), int(self.conf["pool_size"]))]

    def candidates(self, feats0: Features, feats1: Features, k: int) -> tuple[Tensor, Tensor]:
        """The base matcher's candidates (the pools AffineGlue chooses from, before the
        `min_log_assignment` floor)."""
        return self.base.candidates(feats0, feats1, k)

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
                if f.lafs is None and len(f) > 0 and self.capabilities.needs_frames:
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
        pose = {} if c["model"] == "homography" else {"R": torch.from_numpy(est.R),
                                                      "t": torch.from_numpy(est.t)}
        result.geometry = TwoViewGeometry(c["model"], torch.from_numpy(est.model),
                                          result.matches0 > -1, **pose)
        return result
