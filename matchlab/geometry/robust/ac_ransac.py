"""Robust estimation from one-to-many affine correspondences with guided matching
(AffineGlue / StereoGlue's estimator, our implementation; numpy).

Inputs: keypoints of both images, and for each source keypoint i a pool of k candidate
destinations `candidates[i]` (indices into image 1, -1 = empty slot) with matcher scores and
the affine correspondence of each (source, candidate) pair, `acs[i, j]` [2, 2] (pixels,
dx1 = A dx0; see matchlab.geometry.primitives.affine).

Algorithm:
1. Hypotheses: every valid (source, candidate) AC, in order of decreasing candidate score
   (ties broken by a seeded permutation), gives the models of a 1-AC minimal solver
   (homography: 1AC + gravity or the AC's affinity; essential: 1AC + gravity), in batches.
2. Scoring with guided matching: for a model, each source point walks its pool in order and
   takes the FIRST candidate whose squared residual r^2 is below thr^2; it contributes the
   gain of `scoring` at s = r^2 / thr^2 (matchlab.geometry.robust.scoring: "msac", 1 - s, the
   default; or "magsac++", StereoGlue's marginalisation over the noise scale with thr the
   0.99 quantile at sigma_max), sources with no such candidate contribute 0. MSAC is the
   default: MAGSAC++ measured no better (docs/affineglue.md).
3. Local optimisation from the batch's best minimal model whenever it is the best so far,
   and from the batch's best minimal model at 4x the threshold whenever that loose score is
   the best so far (the minimal model of a noisy AC is often only roughly right: gating LO on
   the tight score alone lost the right model on graf). LO: iterated weighted least squares on
   the guided inliers (DLT / 8-point; weights: the scoring's IRLS weights, so with
   "magsac++" MAGSAC++'s sigma-marginalised weights) with the threshold going 4x, 4x, 4x,
   2x, 1x (the minimal model of a noisy AC is only roughly right; for essential matrices preceded by a
   5-point RANSAC (OpenCV) on the pairs within 4x the threshold, because epipolar bands admit
   many outliers at that width), then nested RANSAC: `lo_iterations` subsets of
   7 x (solver size) guided inliers drawn from the seeded generator; the best model wins.
4. Termination: after at least `min_hypotheses` ACs once the RANSAC bound for 1-AC samples,
   log(1 - confidence) / log(1 - inlier ratio), is met, or after `max_hypotheses` ACs.
5. Final least-squares refinement on the guided inliers of the best model (homography:
   OpenCV's least squares + Levenberg-Marquardt on the transfer error; essential: 8-point
   then pycolmap's Sampson-error refinement of (R, t)), kept only if it scores better.
6. Output: the model and ONE-TO-ONE inlier matches: the guided inliers with duplicates on
   the destination side resolved in favour of the smaller residual.
Deterministic for a given seed.

Residuals: homography, forward transfer error in image-1 pixels; essential, Sampson distance
in normalised coordinates times the mean focal length (~pixels).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..primitives.affine import normalize_affine
from ..primitives.camera import default_intrinsics, gravity_rotation, mean_focal, normalize_points
from ..primitives.epipolar import decompose_essential, essential_from_pose, sampson_sq
from ..primitives.homography import transfer_sq
from ..solvers.linear import essential_8pt, homography_dlt
from ..solvers.minimal import essential_1ac_gravity, homography_1ac_affine, homography_1ac_gravity
from .base import two_view_geometry
from .pycolmap import essential_lo_ransac, refine_relative_pose
from .scoring import Scoring


@dataclass
class ACRansacResult:
    """model: H [3, 3] (pixels, x1 ~ H x0) or E [3, 3] (normalised coordinates);
    R, t: relative pose (essential only; t unit, X1 = R X0 + t);
    matches: [M, 2] int64 one-to-one inlier pairs (source index, destination index);
    residuals: [M] residuals of those pairs in pixels; score: the model's score (sum of gains);
    hypotheses: ACs tried; models: minimal models scored; lo_runs: local optimisations."""

    model: np.ndarray
    matches: np.ndarray
    residuals: np.ndarray
    score: float
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    hypotheses: int = 0
    models: int = 0
    lo_runs: int = 0
    info: dict = field(default_factory=dict)

    def geometry(self, n0: int):
        """The model as the shared `TwoViewGeometry`, inliers [n0] over image 0's keypoints
        (True where a source keypoint has an inlier match)."""
        inliers = np.zeros(n0, dtype=bool)
        inliers[self.matches[:, 0]] = True
        return two_view_geometry("homography" if self.R is None else "essential", self.model,
                                 inliers, self.R, self.t)


def _sort_pools(candidates: np.ndarray, scores: np.ndarray | None, acs: np.ndarray):
    """Pools with valid candidates first, by decreasing score within each row."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim == 1:
        candidates = candidates[:, None]
    n0, k = candidates.shape
    acs = np.asarray(acs, dtype=np.float64).reshape(n0, k, 2, 2)
    if scores is None:
        scores = np.tile(-np.arange(k, dtype=np.float64), (n0, 1))  # keep the given order
    scores = np.asarray(scores, dtype=np.float64).reshape(n0, k)
    valid = (candidates >= 0) & np.isfinite(acs).all((2, 3)) & np.isfinite(scores)
    key = np.where(valid, scores, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), 1)
    candidates = np.where(take(valid), take(candidates), -1)
    return candidates, take(scores), take(acs), take(valid)


class _Problem:
    """What differs between homography and essential estimation."""

    sample_size: int

    def minimal(self, src: np.ndarray, slot: np.ndarray) -> np.ndarray: ...
    def residuals(self, models: np.ndarray) -> np.ndarray: ...
    def fit(self, src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None: ...

    def robust_fit(self, src: np.ndarray, dst: np.ndarray, thr_px: float) -> np.ndarray:
        """Models [M, 3, 3] from a set that still holds outliers (none by default)."""
        return np.zeros((0, 3, 3))


class _HomographyProblem(_Problem):
    sample_size = 4

    def __init__(self, kpts0, kpts1, cand, acs, minimal, K0, K1, G0, G1):
        self.x0, self.x1 = kpts0, kpts1
        self.pool1 = np.where((cand >= 0)[..., None], kpts1[np.clip(cand, 0, None)], np.nan)
        self.acs, self.minimal_kind = acs, minimal
        self.K0, self.K1, self.G0, self.G1 = K0, K1, G0, G1
        self.cand = cand

    def minimal(self, src, slot):
        p0 = self.x0[src]
        p1 = self.pool1[src, slot]
        A = self.acs[src, slot]
        models = []
        if self.minimal_kind in ("affine", "both"):
            models.append(homography_1ac_affine(p0, p1, A)[0])
        if self.minimal_kind in ("gravity", "both"):
            n0, n1 = normalize_points(p0, self.K0), normalize_points(p1, self.K1)
            Hn, _ = homography_1ac_gravity(n0, n1, normalize_affine(A, self.K0, self.K1),
                                           self.G0, self.G1)
            models.append(self.K1[None] @ Hn @ np.linalg.inv(self.K0)[None])
        return np.concatenate(models)

    def residuals(self, models):
        return transfer_sq(models[:, None, None], self.x0[:, None, :], self.pool1)

    def fit(self, src, dst, weights):
        return homography_dlt(self.x0[src], self.x1[dst], weights)


def _tilt(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation about the camera's x axis (pitch) then its z axis (roll), degrees."""
    a, b = np.radians(pitch_deg), np.radians(roll_deg)
    Rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    Rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return Rz @ Rx


class _EssentialProblem(_Problem):
    sample_size = 8

    def __init__(self, kpts0, kpts1, cand, acs, K0, K1, G0, G1, tilts=(0.0,)):
        self.n0, self.n1 = normalize_points(kpts0, K0), normalize_points(kpts1, K1)
        self.pool1 = np.where((cand >= 0)[..., None], self.n1[np.clip(cand, 0, None)], np.nan)
        self.acs = normalize_affine(acs, K0, K1)
        self.G0 = G0
        # gravity hypotheses for camera 1: its prior tilted by pitch / roll on a grid
        self.G1s = [G1 @ _tilt(a, b) for a in tilts for b in tilts]
        self.f = mean_focal(K0, K1)

    def minimal(self, src, slot):
        out = []
        for G1 in self.G1s:
            R, t, _ = essential_1ac_gravity(self.n0[src], self.pool1[src, slot],
                                            self.acs[src, slot], self.G0, G1)
            out.append(essential_from_pose(R, t))
        return np.concatenate(out)

    def residuals(self, models):
        return sampson_sq(models[:, None, None], self.n0[:, None, :], self.pool1) * self.f ** 2

    def fit(self, src, dst, weights):
        return essential_8pt(self.n0[src], self.n1[dst], weights)

    def robust_fit(self, src, dst, thr_px):
        # epipolar bands let many outliers through a loose threshold: 5-point RANSAC (OpenCV;
        # its sampler has a fixed internal seed, so this is deterministic for a given input)
        if len(src) < 5:
            return np.zeros((0, 3, 3))
        try:
            E, _ = cv2.findEssentialMat(self.n0[src], self.n1[dst], np.eye(3), method=cv2.RANSAC,
                                        prob=0.999, threshold=thr_px / self.f, maxIters=200)
        except cv2.error:  # OpenCV's polynomial solver can assert on degenerate samples
            return np.zeros((0, 3, 3))
        if E is None or E.shape[1] != 3:
            return np.zeros((0, 3, 3))
        return E.reshape(-1, 3, 3)


def _guided(r: np.ndarray, thr2: float,
            scoring: Scoring) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guided matching of squared residuals [M, N0, k] (NaN = empty): per model and source,
    the first pool slot under thr2. Returns (score [M], slot [M, N0] (-1 none), residual [M, N0])."""
    r = np.where(np.isnan(r), np.inf, r)
    inl = r < thr2
    has = inl.any(2)
    slot = inl.argmax(2)
    rf = np.take_along_axis(r, slot[..., None], 2)[..., 0]
    gain = np.where(has, scoring.gain(np.where(has, rf / thr2, 1.0)), 0.0)
    return gain.sum(1), np.where(has, slot, -1), np.where(has, rf, np.inf)


LO_THRESHOLD_SCHEDULE = (4.0, 4.0, 4.0, 2.0, 1.0)


class _Search:
    def __init__(self, problem: _Problem, cand: np.ndarray, thr_px: float, rng, lo_iterations: int,
                 scoring: Scoring):
        self.p, self.cand, self.thr2, self.scoring = problem, cand, thr_px ** 2, scoring
        self.loose2 = self.thr2 * LO_THRESHOLD_SCHEDULE[0] ** 2
        self.rng, self.lo_iterations = rng, lo_iterations
        self.best_model, self.best_score = None, -np.inf
        self.best_slot = None
        self._last_res = None  # [N0] residuals of the best model's guided inliers (inf: none)
        self.best_loose = -np.inf  # best loose-threshold score of a minimal model sent to LO
        self.lo_runs = 0

    def score(self, models: np.ndarray, chunk: int = 128, loose: bool = False):
        """(score, slot, residual) at the threshold, and the scores at 4x it when `loose`."""
        scores, slots, res, looses = [], [], [], []
        for s in range(0, len(models), chunk):
            r = self.p.residuals(models[s:s + chunk])
            sc, sl, rs = _guided(r, self.thr2, self.scoring)
            scores.append(sc), slots.append(sl), res.append(rs)
            if loose:
                looses.append(_guided(r, self.loose2, self.scoring)[0])
        out = np.concatenate(scores), np.concatenate(slots), np.concatenate(res)
        return out + (np.concatenate(looses),) if loose else out

    def pairs(self, slot: np.ndarray, res: np.ndarray):
        """(src, dst, residual^2) of the guided inliers of one model."""
        src = np.nonzero(slot >= 0)[0]
        return src, self.cand[src, slot[src]], res[src]

    def consider(self, models: np.ndarray) -> None:
        """Score a batch of minimal models; local optimisation from the batch's best model
        at the threshold when it is the best so far, and from the batch's best model at 4x
        the threshold when that beats every model sent to LO so far (a minimal model from a
        noisy AC is often right only roughly, which the loose score sees)."""
        models = models[np.isfinite(models).all((1, 2))]
        if len(models) == 0:
            return
        sc, sl, rs, loose = self.score(models, loose=True)
        b = int(np.argmax(sc))
        if sc[b] > self.best_score:
            self.best_model, self.best_score, self.best_slot = models[b], sc[b], sl[b]
            self._last_res = rs[b]
            self.best_loose = max(self.best_loose, loose[b])
            self.local_optimisation(models[b])
        b = int(np.argmax(loose))
        if loose[b] > self.best_loose:
            self.best_loose = loose[b]
            self.local_optimisation(models[b])

    def _try(self, model) -> bool:
        if model is None or not np.isfinite(model).all():
            return False
        sc, sl, rs = self.score(model[None])
        if sc[0] > self.best_score:
            self.best_model, self.best_score, self.best_slot = model, sc[0], sl[0]
            self._last_res = rs[0]
            return True
        return False

    def local_optimisation(self, start: np.ndarray) -> None:
        """LO from the model `start`; every model it fits replaces the best one if it scores
        better at the threshold."""
        self.lo_runs += 1
        # a robust fit on the pairs within the loosest threshold (essential matrices only)
        _, sl, rs = _guided(self.p.residuals(start[None]), self.loose2, self.scoring)
        src, dst, _ = self.pairs(sl[0], rs[0])
        for model in self.p.robust_fit(src, dst, np.sqrt(self.thr2)):
            self._try(model)
        # iterated least squares with a shrinking threshold (LO-RANSAC's ILSQ): a minimal
        # model from a noisy AC or a wrong gravity prior is only roughly right, so its guided
        # inliers are first collected at 4x the threshold
        for model in ([start, self.best_model] if self.best_model is not start else [start]):
            for mult in LO_THRESHOLD_SCHEDULE:
                _, sl, rs = _guided(self.p.residuals(model[None]), self.thr2 * mult ** 2,
                                   self.scoring)
                src, dst, r = self.pairs(sl[0], rs[0])
                if len(src) < self.p.sample_size:
                    break
                weights = self.scoring.weight(r / (self.thr2 * mult ** 2)) + 1e-3
                fitted = self.p.fit(src, dst, weights)
                if fitted is None or not np.isfinite(fitted).all():
                    break
                model = fitted
                self._try(model)
        # nested RANSAC on subsets of the best model's inliers
        size = 7 * self.p.sample_size
        src, dst, _ = self.pairs(self.best_slot, self._last_res)
        if len(src) <= size:
            return
        for _ in range(self.lo_iterations):
            pick = self.rng.choice(len(src), size=size, replace=False)
            if self._try(self.p.fit(src[pick], dst[pick], None)):
                src, dst, _ = self.pairs(self.best_slot, self._last_res)
                if len(src) <= size:
                    return


def _run(problem: _Problem, cand, scores, valid, *, threshold_px, min_hypotheses, max_hypotheses,
         confidence, lo_iterations, batch_size, seed, scoring) -> tuple[_Search, int, int]:
    rng = np.random.default_rng(seed)
    src, slot = np.nonzero(valid)
    tie = rng.permutation(len(src))
    order = np.lexsort((tie, -scores[src, slot]))  # by score, then the seeded permutation
    src, slot = src[order], slot[order]
    search = _Search(problem, cand, threshold_px, rng, lo_iterations, Scoring(scoring))
    n_sources = max(int(valid.any(1).sum()), 1)
    tried = models_scored = 0
    limit = min(len(src), max_hypotheses)
    while tried < limit:
        s = slice(tried, min(tried + batch_size, limit))
        models = problem.minimal(src[s], slot[s])
        models_scored += len(models)
        search.consider(models)
        tried = s.stop
        if search.best_slot is not None:
            ratio = float((search.best_slot >= 0).sum()) / n_sources
            if ratio >= 1:
                needed = 1
            elif ratio <= 0:
                needed = np.inf
            else:
                needed = np.log(1 - confidence) / np.log(1 - ratio)
            if tried >= max(min_hypotheses, needed):
                break
    return search, tried, models_scored


def _one_to_one(src: np.ndarray, dst: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Indices into (src, dst, r) keeping, for each destination, the smallest residual."""
    order = np.lexsort((r, dst))
    first = np.ones(len(order), dtype=bool)
    first[1:] = dst[order][1:] != dst[order][:-1]
    return np.sort(order[first])


def _prepare(kpts0, kpts1, candidates, scores, acs):
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    cand, scores, acs, valid = _sort_pools(candidates, scores, acs)
    if len(cand) != len(kpts0):
        raise ValueError(f"candidates has {len(cand)} rows but kpts0 has {len(kpts0)} points")
    if (cand >= len(kpts1)).any():
        raise ValueError("candidates index past the end of kpts1")
    return kpts0, kpts1, cand, scores, acs, valid


def estimate_homography_ac(kpts0, kpts1, candidates, acs, scores=None, *, threshold_px: float = 3.0,
                           minimal: str = "auto", K0=None, K1=None, image_size0=None,
                           image_size1=None, gravity0=None, gravity1=None,
                           min_hypotheses: int = 100, max_hypotheses: int = 2000,
                           confidence: float = 0.999, lo_iterations: int = 20,
                           batch_size: int = 64, scoring: str = "msac",
                           seed: int = 0) -> ACRansacResult | None:
    """Homography (pixels, x1 ~ H x0) from candidate pools; see the module docstring.

    kpts0 [N0, 2], kpts1 [N1, 2]; candidates [N0, k] (-1 = empty); acs [N0, k, 2, 2] pixel ACs;
    scores [N0, k] (higher first; None = the given order). minimal: "gravity" (1AC + gravity
    homography in the cameras K0, K1; without them, a guess from image_size*: focal 1.2 max(W, H),
    centred principal point; without those, from the keypoints' extent), "affine" (the AC's
    own affinity; gravity-free), "both", or "auto": "gravity" when a gravity direction is
    given, else "affine" (measured: with the upright prior on graf / EVD, whose cameras roll,
    the gravity models of even exact ACs explain few points).
    gravity*: [3] down direction in camera coordinates (None: upright). Returns None when no
    model has >= 4 guided inliers."""
    kpts0, kpts1, cand, scores, acs, valid = _prepare(kpts0, kpts1, candidates, scores, acs)
    if minimal not in ("gravity", "affine", "both", "auto"):
        raise ValueError(f"minimal must be 'auto', 'gravity', 'affine' or 'both', got {minimal!r}")
    if minimal == "auto":
        minimal = "affine" if gravity0 is None and gravity1 is None else "gravity"

    def guess(K, size, pts):
        if K is not None:
            return np.asarray(K, dtype=np.float64)
        if size is None:
            size = tuple(np.ceil(pts.max(0) + 1).astype(int)) if len(pts) else (1, 1)
        return default_intrinsics(size)

    K0, K1 = guess(K0, image_size0, kpts0), guess(K1, image_size1, kpts1)
    problem = _HomographyProblem(kpts0, kpts1, cand, acs, minimal, K0, K1,
                                 gravity_rotation(gravity0), gravity_rotation(gravity1))
    search, tried, n_models = _run(problem, cand, scores, valid, threshold_px=threshold_px,
                                   min_hypotheses=min_hypotheses, max_hypotheses=max_hypotheses,
                                   confidence=confidence, lo_iterations=lo_iterations,
                                   batch_size=batch_size, seed=seed, scoring=scoring)
    if search.best_model is None:
        return None
    src, dst, r = search.pairs(search.best_slot, search._last_res)
    if len(src) >= 4:  # final: least squares + LM on the transfer error (OpenCV)
        H, _ = cv2.findHomography(kpts0[src], kpts1[dst], 0)
        if H is not None:
            search._try(H)
    src, dst, r = search.pairs(search.best_slot, search._last_res)
    if len(src) < 4:
        return None
    keep = _one_to_one(src, dst, r)
    H = search.best_model / search.best_model[2, 2] if abs(search.best_model[2, 2]) > 1e-12 \
        else search.best_model
    return ACRansacResult(H, np.stack([src[keep], dst[keep]], 1), np.sqrt(r[keep]),
                          float(search.best_score), hypotheses=tried, models=n_models,
                          lo_runs=search.lo_runs)


def estimate_essential_ac(kpts0, kpts1, candidates, acs, K0, K1, scores=None, *,
                          threshold_px: float = 1.0, gravity0=None, gravity1=None,
                          min_hypotheses: int = 100, max_hypotheses: int = 2000,
                          confidence: float = 0.999, lo_iterations: int = 20,
                          batch_size: int = 64, refine: bool = True, tilt_grid_deg=(0.0,),
                          lo_ransac_seed: bool = False, scoring: str = "msac",
                          seed: int = 0) -> ACRansacResult | None:
    """Essential matrix and relative pose from candidate pools with the 1AC + gravity solver.

    K0, K1: [3, 3] intrinsics (pixels); threshold_px: on the Sampson distance times the mean
    focal. tilt_grid_deg: relative pitch / roll offsets (degrees) tried on camera 1's gravity,
    e.g. (-40, -20, 0, 20, 40): a grid of gravity hypotheses for when the prior is unreliable
    (every AC is solved once per grid cell). lo_ransac_seed: also start local optimisation
    from pycolmap LO-RANSAC's pose on the pools' first candidates (a gravity-free hypothesis,
    for when the gravity prior is wrong). Returns None when no model has >= 8 guided
    inliers or no pose passes cheirality."""
    kpts0, kpts1, cand, scores, acs, valid = _prepare(kpts0, kpts1, candidates, scores, acs)
    K0, K1 = np.asarray(K0, dtype=np.float64), np.asarray(K1, dtype=np.float64)
    problem = _EssentialProblem(kpts0, kpts1, cand, acs, K0, K1,
                                gravity_rotation(gravity0), gravity_rotation(gravity1),
                                tuple(float(a) for a in tilt_grid_deg))
    search, tried, n_models = _run(problem, cand, scores, valid, threshold_px=threshold_px,
                                   min_hypotheses=min_hypotheses, max_hypotheses=max_hypotheses,
                                   confidence=confidence, lo_iterations=lo_iterations,
                                   batch_size=batch_size, seed=seed, scoring=scoring)
    if lo_ransac_seed:
        _gravity_free_start(search, kpts0, kpts1, cand, valid, K0, K1, threshold_px, seed)
    if search.best_model is None:
        return None
    src, dst, r = search.pairs(search.best_slot, search._last_res)
    if len(src) < 8:
        return None
    pose = decompose_essential(search.best_model, problem.n0[src], problem.n1[dst])
    if pose is None:
        return None
    R, t, _ = pose
    if refine:
        R, t = _refine_pose(R, t, problem.n0[src], problem.n1[dst], search)
    src, dst, r = search.pairs(search.best_slot, search._last_res)
    keep = _one_to_one(src, dst, r)
    return ACRansacResult(search.best_model, np.stack([src[keep], dst[keep]], 1), np.sqrt(r[keep]),
                          float(search.best_score), R=R, t=t, hypotheses=tried,
                          models=n_models, lo_runs=search.lo_runs)


def _gravity_free_start(search: _Search, kpts0, kpts1, cand, valid, K0, K1, threshold_px: float,
                        seed: int) -> None:
    """Score pycolmap LO-RANSAC's essential matrix on the first candidate of every pool and
    run local optimisation from it (guided matching then decides between it and the AC
    models)."""
    src = np.nonzero(valid[:, 0])[0] if valid.shape[1] else np.zeros(0, dtype=np.int64)
    if len(src) < 5:
        return
    est = essential_lo_ransac(kpts0[src], kpts1[cand[src, 0]], K0, K1, threshold_px=threshold_px,
                              seed=seed)
    if est is None:
        return
    E = essential_from_pose(est.R.numpy(), est.t.numpy())
    search._try(E)
    if search.best_model is not None:
        search.local_optimisation(E)


def _refine_pose(R, t, n0, n1, search: _Search):
    """pycolmap's Sampson-error refinement of (R, t) on the inliers; kept if it scores better."""
    refined = refine_relative_pose(R, t, n0, n1)
    if refined is not None and search._try(essential_from_pose(*refined)):
        return refined
    return R, t
