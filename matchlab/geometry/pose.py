"""Confidence-weighted relative pose in torch: a differentiable weighted eight-point
estimator and a two-view bundle adjustment (Roessle & Nießner, "End2End Multi-View Feature
Matching with Differentiable Pose Optimization", ICCV 2023; methods.md section 5). Our own
implementation of the equations, not a port of the authors' code.

Conventions (the same as `relative_pose.py`):
- points are intrinsics-normalised image coordinates ``x = K^-1 [u, v, 1]`` (first two
  components), so the estimated "fundamental" matrix is the essential matrix;
- a pose (R, t) maps camera-0 coordinates to camera-1 coordinates, ``X1 = R X0 + t``, hence
  ``E = [t]_x R`` and ``x1^T E x0 = 0``; t is returned as a unit vector;
- everything is batched over pairs: x0, x1 are [B, M, 2] (or [M, 2] for one pair, and the
  outputs then lose their batch dimension); `mask` [B, M] marks the real matches of padded
  batches and `weights` [B, M] are the match confidences (>= 0);
- float64 is recommended (the tests use it); any floating dtype / device works.

Differentiability: every output is a smooth function of x0, x1 and weights almost
everywhere, and gradients flow through all of it (tests/test_pose.py runs
`torch.autograd.gradcheck`). The only discrete choices are the cheirality selection among
the four (R, t) decompositions of E and the accept / reject decisions of the damped
Gauss-Newton steps; they are locally constant. Choices made for smooth gradients:
- the null vector of the weighted design matrix A is the eigenvector of the 9x9 matrix
  A^T A with the smallest eigenvalue (`eigh`), which also works with exactly 8 matches;
- the rank-2 projection is F (I - v v^T) with v the smallest eigenvector of F^T F, equal to
  zeroing the smallest singular value of F, but without differentiating through the two
  other, possibly (for a perfect essential matrix exactly) equal singular values;
- E is decomposed without an SVD of E (whose two equal singular values make SVD gradients
  blow up): Newton-Schulz iterations project E onto the essential manifold (singular
  values (1, 1, 0)), the baseline comes from b b^T = I - E E^T and the two rotations from
  the cofactor matrix, R = cof(E) -/+ [b]_x E.

Gauge of the two-view bundle adjustment: residuals are invariant to a common scaling of
the translation and of the points, so the translation is kept on the unit sphere:
||t|| = 1 throughout; the pose has 5 degrees of freedom (a rotation update exp([w]_x) R,
left-multiplied, w in so(3), and a 2-vector in the tangent plane of the sphere at t,
followed by renormalisation). The points (3 each) are then fully determined.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MIN_MATCHES_8PT = 8
MIN_MATCHES_BA = 6  # the BA needs more residuals (4 per match) than unknowns (5 + 3 per match)


# ---------------------------------------------------------------- input handling
def _prepare(x0: Tensor, x1: Tensor, weights: Tensor | None, mask: Tensor | None):
    """Batch, check and broadcast the inputs. Returns (x0, x1, w, mask, was_batched)."""
    if not (torch.is_tensor(x0) and torch.is_tensor(x1)):
        raise TypeError("x0 and x1 must be torch tensors ([B, M, 2] or [M, 2])")
    batched = x0.dim() == 3
    if not batched:
        x0, x1 = x0[None], x1[None]
        weights = None if weights is None else weights[None]
        mask = None if mask is None else mask[None]
    if x0.dim() != 3 or x0.shape[-1] != 2 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must both be [B, M, 2] or [M, 2], got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0, x1 must be floating point, got {x0.dtype}")
    B, M = x0.shape[:2]
    if mask is None:
        mask = torch.ones(B, M, dtype=torch.bool, device=x0.device)
    mask = mask.to(torch.bool)
    if weights is None:
        weights = torch.ones(B, M, dtype=x0.dtype, device=x0.device)
    if weights.shape != (B, M) or mask.shape != (B, M):
        raise ValueError(f"weights and mask must be [B, M] = {(B, M)}, got "
                         f"{tuple(weights.shape)} and {tuple(mask.shape)}")
    weights = weights.to(x0.dtype)
    return x0, x1, weights, mask, batched


def _check_count(mask: Tensor, weights: Tensor, minimum: int, what: str) -> None:
    counts = (mask & (weights > 0)).sum(-1)
    bad = torch.nonzero(counts < minimum)[:, 0].tolist()
    if bad:
        raise ValueError(f"{what} needs at least {minimum} matches with positive weight per "
                         f"pair; batch entries {bad} have {counts[bad].tolist()}")


def _unbatch(value, batched: bool):
    return value if batched else value[0]


def homogeneous(x: Tensor) -> Tensor:
    """[..., 2] -> [..., 3] with a trailing 1."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def skew(v: Tensor) -> Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrix: skew(v) @ u == v x u."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def so3_exp(w: Tensor) -> Tensor:
    """[..., 3] axis-angle -> [..., 3, 3] rotation (Rodrigues), with a series at small angles
    so that values and gradients stay finite at 0."""
    theta2 = (w * w).sum(-1)
    small = theta2 < 1e-10
    safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe)
    K = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


# ---------------------------------------------------------------- weighted eight-point
def hartley_normalize(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Translate the valid points of each pair to their centroid and scale them to a mean
    distance of sqrt(2). x: [B, M, 2], mask: [B, M]. Returns (x_normalised, T [B, 3, 3])
    with x_normalised = T x (homogeneous)."""
    m = mask.to(x.dtype)[..., None]
    n = m.sum(1).clamp_min(1)
    centre = (x * m).sum(1) / n                                          # [B, 2]
    dist = ((x - centre[:, None]) ** 2).sum(-1).clamp_min(1e-300).sqrt()  # [B, M]
    mean_dist = (dist * m[..., 0]).sum(1) / n[:, 0]
    scale = 2 ** 0.5 / mean_dist.clamp_min(torch.finfo(x.dtype).tiny)
    z, one = torch.zeros_like(scale), torch.ones_like(scale)
    T = torch.stack([torch.stack([scale, z, -scale * centre[:, 0]], -1),
                     torch.stack([z, scale, -scale * centre[:, 1]], -1),
                     torch.stack([z, z, one], -1)], -2)
    return (x - centre[:, None]) * scale[:, None, None], T


def weighted_eight_point(x0: Tensor, x1: Tensor, weights: Tensor | None = None,
                         mask: Tensor | None = None) -> Tensor:
    """Essential matrix from normalised correspondences by the confidence-weighted 8-point.

    x0, x1: [B, M, 2] (or [M, 2]) intrinsics-normalised points; weights: [B, M] confidences
    (default 1); mask: [B, M] valid matches (default all). Steps (methods.md 5.1): Hartley
    normalisation of each point set (over the valid matches), one row
    [x1 x0, x1 y0, x1, y1 x0, y1 y0, y1, x0, y0, 1] per match scaled by its confidence
    (confidences renormalised to sum 1), the null vector of the weighted system, rank-2
    projection, de-normalisation. Returns E [B, 3, 3] with unit Frobenius norm (up to sign)
    and x1^T E x0 ~ 0. Raises ValueError when a pair has fewer than 8 valid matches with
    positive weight.
    """
    x0, x1, w, mask, batched = _prepare(x0, x1, weights, mask)
    _check_count(mask, w, MIN_MATCHES_8PT, "the weighted eight-point")
    if (w < 0).any():
        raise ValueError("weights must be >= 0")
    n0, T0 = hartley_normalize(x0, mask)
    n1, T1 = hartley_normalize(x1, mask)
    w = w * mask.to(w.dtype)
    w = w / w.sum(-1, keepdim=True)
    a, b = n0.unbind(-1)
    c, d = n1.unbind(-1)
    one = torch.ones_like(a)
    rows = torch.stack([c * a, c * b, c, d * a, d * b, d, a, b, one], -1) * w[..., None]
    _, vecs = torch.linalg.eigh(rows.transpose(1, 2) @ rows)              # ascending
    F = vecs[..., 0].reshape(-1, 3, 3)
    # rank 2: F (I - v v^T) with v the right null direction (smallest eigenvector of F^T F)
    _, fv = torch.linalg.eigh(F.transpose(1, 2) @ F)
    v = fv[..., 0]
    F = F - (F @ v[..., None]) @ v[:, None]
    E = T1.transpose(1, 2) @ F @ T0
    E = E / E.flatten(1).norm(dim=-1)[:, None, None]
    return _unbatch(E, batched)


# ---------------------------------------------------------------- decomposition and cheirality
def project_to_essential(E: Tensor, iterations: int = 40) -> Tensor:
    """[B, 3, 3] rank-2 matrices -> the nearest matrices with singular values (1, 1, 0).

    Newton-Schulz polar iterations X <- X (3 I - X^T X) / 2 on E scaled to s1^2 + s2^2 = 2:
    singular values in (0, sqrt(3)) converge to 1 (quadratically near 1; a ratio s2 / s1 of
    1e-6 still converges within the 40 steps), 0 is kept at 0. Smooth in E (no SVD), so its
    gradient is finite for a perfect essential matrix too.
    """
    X = E * (2.0 / (E * E).sum((-2, -1), keepdim=True).clamp_min(1e-300)).sqrt()
    eye = torch.eye(3, dtype=E.dtype, device=E.device)
    # 0 is an unstable fixed point (rounding noise grows by 1.5 per step): project the right
    # null direction v of E out after every step (v: smallest eigenvector of E^T E)
    v = torch.linalg.eigh(E.transpose(-2, -1) @ E)[1][..., 0]
    null = eye - v[..., :, None] * v[..., None, :]
    X = X @ null
    for _ in range(iterations):
        X = (0.5 * X @ (3 * eye - X.transpose(-2, -1) @ X)) @ null
    return X


def cofactor(A: Tensor) -> Tensor:
    """[..., 3, 3] cofactor matrix (det(A) A^-T when invertible): rows are cross products."""
    r0, r1, r2 = A.unbind(-2)
    return torch.stack([torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0),
                        torch.linalg.cross(r0, r1)], -2)


def decompose_essential(E: Tensor) -> tuple[Tensor, Tensor]:
    """The four (R, t) with E ~ [t]_x R (up to sign and scale). E: [B, 3, 3].
    Returns R [B, 4, 3, 3] and unit t [B, 4, 3] in the order (Ra, b), (Ra, -b), (Rb, b), (Rb, -b).

    With X the essential projection of E (singular values 1, 1, 0), b b^T = I - X X^T gives
    the baseline b (unit); for X = [b]_x R: cof(X) = b b^T R and [b]_x X = (b b^T - I) R, so
    Ra = cof(X) - [b]_x X = R and Rb = cof(X) + [b]_x X = (2 b b^T - I) R (the twisted pair).
    """
    X = project_to_essential(E)
    eye = torch.eye(3, dtype=E.dtype, device=E.device)
    P = eye - X @ X.transpose(-2, -1)                                    # b b^T
    column = P.detach().norm(dim=-2).argmax(-1)                          # best-conditioned column
    b = torch.take_along_dim(P, column[:, None, None].expand(-1, 3, 1), dim=-1)[..., 0]
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    cof, bx = cofactor(X), skew(b) @ X
    Ra, Rb = cof - bx, cof + bx
    R = torch.stack([Ra, Ra, Rb, Rb], 1)
    t = torch.stack([b, -b, b, -b], 1)
    return R, t


def triangulate(x0: Tensor, x1: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Midpoint triangulation of normalised matches for X1 = R X0 + t.

    x0, x1: [..., M, 2]; R: [..., 3, 3]; t: [..., 3]. Returns (Y [..., M, 3] midpoints of
    the closest points of the two rays, in camera-0 coordinates; depth0, depth1 [..., M]:
    the depths of those closest points along each ray, z in each camera).
    """
    f0 = homogeneous(x0)
    f1 = homogeneous(x1) @ R                                              # R^T x1h, camera-0 frame
    c1 = -(R.transpose(-2, -1) @ t[..., None])[..., 0]                    # camera-1 centre
    c1 = c1[..., None, :]
    a = (f0 * f0).sum(-1)
    b = (f0 * f1).sum(-1)
    c = (f1 * f1).sum(-1)
    p = (f0 * c1).sum(-1)
    q = (f1 * c1).sum(-1)
    det = a * c - b * b
    det = torch.where(det.abs() < 1e-15, torch.full_like(det, 1e-15), det)
    d0 = (p * c - b * q) / det
    d1 = (b * p - a * q) / det
    Y = 0.5 * (d0[..., None] * f0 + c1 + d1[..., None] * f1)
    return Y, d0, d1


def choose_pose(E: Tensor, x0: Tensor, x1: Tensor, weights: Tensor, mask: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Cheirality: of the four decompositions of E [B, 3, 3], the one with the largest total
    confidence of matches in front of both cameras. x0, x1: [B, M, 2]; weights, mask: [B, M].
    Returns (R [B, 3, 3], t [B, 3] unit, in_front [B, M] bool)."""
    Rs, ts = decompose_essential(E)
    _, d0, d1 = triangulate(x0[:, None], x1[:, None], Rs, ts)              # [B, 4, M]
    front = (d0 > 0) & (d1 > 0) & mask[:, None]
    score = (front.to(weights.dtype) * weights[:, None]).sum(-1) + 1e-9 * front.sum(-1)
    best = score.argmax(-1)
    idx = torch.arange(E.shape[0], device=E.device)
    return Rs[idx, best], ts[idx, best], front[idx, best]


# ---------------------------------------------------------------- errors
def sampson_error(E: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """[B, M] Sampson distance (first-order geometric error, normalised units) of matches
    x0, x1 [B, M, 2] to E [B, 3, 3]."""
    h0, h1 = homogeneous(x0), homogeneous(x1)
    Ex0 = h0 @ E.transpose(-2, -1)
    Etx1 = h1 @ E
    num = (h1 * Ex0).sum(-1)
    den = Ex0[..., 0] ** 2 + Ex0[..., 1] ** 2 + Etx1[..., 0] ** 2 + Etx1[..., 1] ** 2
    return num.abs() / den.clamp_min(1e-300).sqrt()


def symmetric_epipolar_distance(E: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """[B, M] sqrt of the squared symmetric epipolar distance (sum of the squared distances of
    each point to its epipolar line, normalised units; SuperGlue's error without the square)."""
    h0, h1 = homogeneous(x0), homogeneous(x1)
    Ex0 = h0 @ E.transpose(-2, -1)
    Etx1 = h1 @ E
    num = (h1 * Ex0).sum(-1) ** 2
    d2 = num / (Ex0[..., 0] ** 2 + Ex0[..., 1] ** 2).clamp_min(1e-300) \
        + num / (Etx1[..., 0] ** 2 + Etx1[..., 1] ** 2).clamp_min(1e-300)
    return d2.sqrt()


def essential_from_pose(R: Tensor, t: Tensor) -> Tensor:
    return skew(t) @ R


# ---------------------------------------------------------------- relative pose (w8pt)
@dataclass
class RelativePose:
    """R [B, 3, 3], t [B, 3] (unit), E [B, 3, 3] and weights [B, M] used in the last solve;
    in_front [B, M]: matches triangulated in front of both cameras (no batch dim for one pair)."""

    R: Tensor
    t: Tensor
    E: Tensor
    weights: Tensor
    in_front: Tensor


def relative_pose_w8pt(x0: Tensor, x1: Tensor, weights: Tensor | None = None,
                       mask: Tensor | None = None, *, irls_iterations: int = 0,
                       irls_scale: float = 1e-3) -> RelativePose:
    """Relative pose by the weighted eight-point + cheirality selection (methods.md 5.1).

    x0, x1: [B, M, 2] (or [M, 2]) normalised points; weights: [B, M] confidences; mask: [B, M].
    irls_iterations: 0 is the paper's estimator (one weighted solve). Our addition, k > 0:
    k re-solves, each with weights = confidence / (1 + (s / irls_scale)^2), s the Sampson
    error (normalised units) to the previous E (Cauchy IRLS), which suppresses outliers the
    plain weighted least squares cannot. irls_scale: about the noise level in normalised
    units (e.g. 1 px / focal). Differentiable through all iterations.
    """
    x0, x1, w, mask, batched = _prepare(x0, x1, weights, mask)
    E = weighted_eight_point(x0, x1, w, mask)
    w_used = w
    for _ in range(int(irls_iterations)):
        s = sampson_error(E, x0, x1)
        w_used = w / (1 + (s / irls_scale) ** 2)
        E = weighted_eight_point(x0, x1, w_used, mask)
    R, t, front = choose_pose(E, x0, x1, w_used * mask.to(w.dtype), mask)
    out = RelativePose(R, t, essential_from_pose(R, t), w_used, front)
    if not batched:
        out = RelativePose(*(v[0] for v in (out.R, out.t, out.E, out.weights, out.in_front)))
    return out


# ---------------------------------------------------------------- two-view bundle adjustment
@dataclass
class BundleAdjustment:
    """R [B, 3, 3], t [B, 3] (unit), points Y [B, M, 3] (camera-0 coordinates); weights [B, M]:
    the residual weights used (renormalised confidences, 0 for masked matches and for matches
    triangulated behind a camera at the start); cost_initial, cost [B]: the weighted sum of
    squared residuals before and after (cost <= cost_initial: the best iterate is kept);
    iterations_accepted [B]."""

    R: Tensor
    t: Tensor
    Y: Tensor
    weights: Tensor
    cost_initial: Tensor
    cost: Tensor
    iterations_accepted: Tensor


def _project(p: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection of [..., 3] points and its Jacobian [..., 2, 3]."""
    z = p[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    inv = 1 / zs
    u, v = p[..., 0] * inv, p[..., 1] * inv
    zero = torch.zeros_like(z)
    J = torch.stack([torch.stack([inv, zero, -u * inv], -1),
                     torch.stack([zero, inv, -v * inv], -1)], -2)
    return torch.stack([u, v], -1), J


def _sphere_basis(t: Tensor) -> Tensor:
    """[B, 3] unit vectors -> [B, 3, 2]: an orthonormal basis of the tangent plane at t."""
    axis = t.detach().abs().argmin(-1)
    e = torch.nn.functional.one_hot(axis, 3).to(t.dtype)
    b1 = e - (e * t).sum(-1, keepdim=True) * t
    b1 = b1 / b1.norm(dim=-1, keepdim=True)
    b2 = torch.linalg.cross(t, b1)
    return torch.stack([b1, b2], -1)


def _residuals(R: Tensor, t: Tensor, Y: Tensor, x0: Tensor, x1: Tensor, w: Tensor):
    p1 = (Y @ R.transpose(-2, -1)) + t[:, None]
    q0, J0 = _project(Y)
    q1, J1 = _project(p1)
    r0 = w[..., None] * (q0 - x0)
    r1 = w[..., None] * (q1 - x1)
    cost = (r0 ** 2).sum((-2, -1)) + (r1 ** 2).sum((-2, -1))
    return r0, r1, J0, J1, p1, cost


def bundle_adjust_two_view(x0: Tensor, x1: Tensor, R: Tensor, t: Tensor,
                           weights: Tensor | None = None, mask: Tensor | None = None, *,
                           iterations: int = 10, damping: float = 0.1,
                           damping_down: float = 3.5, damping_up: float = 1.5) -> BundleAdjustment:
    """Two-view bundle adjustment of a relative pose and the matches' 3D points.

    x0, x1: [B, M, 2] (or [M, 2]) normalised points; R [B, 3, 3], t [B, 3]: initial pose
    (t is normalised to unit length: the gauge, see the module docstring); weights [B, M]
    confidences; mask [B, M].
    Points are initialised by midpoint triangulation. Residuals are r0 = w (pi(Y) - x0) and
    r1 = w (pi(R Y + t) - x1) in normalised coordinates, w the confidences renormalised to
    sum 1 over the pair's valid matches, and w = 0 for matches triangulated behind either
    camera (methods.md 5.1). Each iteration solves the Levenberg-Marquardt system
    (J^T J + lambda diag(J^T J)) dz = -J^T r with analytic Jacobians, eliminating the points
    by a Schur complement (a 5x5 system per pair and a 3x3 one per point, O(M)), then
    updates R <- exp([dw]_x) R, t <- normalise(t + B dt), Y <- Y + dY. A step is accepted
    only if it lowers the cost (so the best iterate is kept) and lambda is divided by
    `damping_down`, else the state is kept and lambda multiplied by `damping_up` (the
    paper's schedule: start 0.1, / 3.5, x 1.5; 10 iterations at test time).
    Raises ValueError for a pair with fewer than 6 usable matches.
    """
    x0, x1, w, mask, batched = _prepare(x0, x1, weights, mask)
    if not batched:
        R, t = R[None], t[None]
    if R.shape != (x0.shape[0], 3, 3) or t.shape != (x0.shape[0], 3):
        raise ValueError(f"R, t must be [B, 3, 3], [B, 3] for B = {x0.shape[0]}, got "
                         f"{tuple(R.shape)}, {tuple(t.shape)}")
    R, t = R.to(x0.dtype), t.to(x0.dtype)
    t = t / t.norm(dim=-1, keepdim=True)
    Y, d0, d1 = triangulate(x0, x1, R, t)
    valid = mask & (d0 > 0) & (d1 > 0) & (w > 0)
    _check_count(valid, w, MIN_MATCHES_BA, "the two-view bundle adjustment (matches in front "
                 "of both cameras)")
    w = w * valid.to(w.dtype)
    w = w / w.sum(-1, keepdim=True)
    # points without weight: keep them finite and out of the system
    Y = torch.where(valid[..., None], Y, homogeneous(x0))

    B, M = x0.shape[:2]
    eye3 = torch.eye(3, dtype=x0.dtype, device=x0.device)
    lam = torch.full((B,), float(damping), dtype=x0.dtype, device=x0.device)
    accepted = torch.zeros(B, dtype=torch.long, device=x0.device)
    r0, r1, J0, J1, p1, cost = _residuals(R, t, Y, x0, x1, w)
    cost_initial = cost
    for _ in range(int(iterations)):
        wj = w[..., None, None]
        A0 = wj * J0                                                      # d r0 / d Y  [B, M, 2, 3]
        A1 = wj * (J1 @ R[:, None])                                       # d r1 / d Y
        Bt = _sphere_basis(t)
        # d r1 / d pose [B, M, 2, 5]: rotation (left perturbation) then the sphere tangent of t
        P = torch.cat([-(J1 @ skew(p1 - t[:, None])), J1 @ Bt[:, None]], -1) * wj
        Hpp = (P.transpose(-2, -1) @ P).sum(1)                            # [B, 5, 5]
        gp = (P.transpose(-2, -1) @ r1[..., None]).sum(1)                 # [B, 5, 1]
        Hll = A0.transpose(-2, -1) @ A0 + A1.transpose(-2, -1) @ A1       # [B, M, 3, 3]
        gl = A0.transpose(-2, -1) @ r0[..., None] + A1.transpose(-2, -1) @ r1[..., None]
        Hpl = P.transpose(-2, -1) @ A1                                    # [B, M, 5, 3]
        # Marquardt damping (= Jacobi preconditioning + lambda I); unused points get identity
        lam4 = lam[:, None, None]
        Hpp_d = Hpp + lam4 * torch.diag_embed(torch.diagonal(Hpp, dim1=-2, dim2=-1)) \
            + 1e-14 * torch.diagonal(Hpp, dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(
                5, dtype=x0.dtype, device=x0.device)
        Hll_d = Hll + lam[:, None, None, None] * torch.diag_embed(torch.diagonal(Hll, dim1=-2, dim2=-1))
        Hll_d = torch.where(valid[..., None, None], Hll_d, eye3)
        Hll_inv = torch.linalg.inv(Hll_d)
        HplHinv = Hpl @ Hll_inv                                           # [B, M, 5, 3]
        S = Hpp_d - (HplHinv @ Hpl.transpose(-2, -1)).sum(1)
        rhs = -gp + (HplHinv @ gl).sum(1)
        dp = torch.linalg.solve(S, rhs)                                   # [B, 5, 1]
        dl = -(Hll_inv @ (gl + Hpl.transpose(-2, -1) @ dp[:, None]))[..., 0]  # [B, M, 3]
        dl = torch.where(valid[..., None], dl, torch.zeros_like(dl))
        R_new = so3_exp(dp[:, :3, 0]) @ R
        t_new = t + (Bt @ dp[:, 3:])[..., 0]
        t_new = t_new / t_new.norm(dim=-1, keepdim=True)
        Y_new = Y + dl
        new = _residuals(R_new, t_new, Y_new, x0, x1, w)
        ok = torch.isfinite(new[-1]) & (new[-1] < cost)
        R = torch.where(ok[:, None, None], R_new, R)
        t = torch.where(ok[:, None], t_new, t)
        Y = torch.where(ok[:, None, None], Y_new, Y)
        r0, r1, J0, J1, p1, cost = (torch.where(ok.view(-1, *[1] * (o.dim() - 1)), n, o)
                                    for n, o in zip(new, (r0, r1, J0, J1, p1, cost)))
        lam = torch.where(ok, lam / damping_down, lam * damping_up)
        accepted = accepted + ok.long()
    out = BundleAdjustment(R, t, Y, w, cost_initial, cost, accepted)
    if not batched:
        out = BundleAdjustment(*(v[0] for v in (out.R, out.t, out.Y, out.weights, out.cost_initial,
                                                 out.cost, out.iterations_accepted)))
    return out


# ---------------------------------------------------------------- padding helper
def pad_batch(pairs: list[tuple[Tensor, Tensor, Tensor | None]], dtype=torch.float64
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack pairs of different lengths: [(x0 [Mi, 2], x1 [Mi, 2], weights [Mi] or None)] ->
    (x0 [B, M, 2], x1 [B, M, 2], weights [B, M], mask [B, M]), M = max Mi, padded with zeros."""
    M = max((len(p[0]) for p in pairs), default=0)
    B = len(pairs)
    x0 = torch.zeros(B, M, 2, dtype=dtype)
    x1 = torch.zeros(B, M, 2, dtype=dtype)
    w = torch.zeros(B, M, dtype=dtype)
    mask = torch.zeros(B, M, dtype=torch.bool)
    for i, (a, b, s) in enumerate(pairs):
        n = len(a)
        x0[i, :n], x1[i, :n] = torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype)
        w[i, :n] = 1.0 if s is None else torch.as_tensor(s, dtype=dtype)
        mask[i, :n] = True
    return x0, x1, w, mask
