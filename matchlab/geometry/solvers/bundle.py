"""Two-view bundle adjustment in torch (Roessle & Niessner, "End2End Multi-View Feature
Matching with Differentiable Pose Optimization", ICCV 2023): refines a relative pose and the
matches' 3D points by confidence-weighted Levenberg-Marquardt. Our own implementation of the
equations, not a port of the authors' code.

Conventions: points are intrinsics-normalised image coordinates; a pose (R, t) maps camera-0
to camera-1 coordinates, X1 = R X0 + t; inputs are batched over pairs (x0, x1 [B, M, 2] or
[M, 2] for one pair, whose outputs then lose their batch dimension; `mask` [B, M] marks the
real matches of padded batches, `weights` [B, M] are confidences >= 0); float64 recommended.
Differentiable almost everywhere (the accept / reject decisions of the damped steps are
locally constant); tests/geometry/test_pose.py runs `torch.autograd.gradcheck`.

Gauge: residuals are invariant to a common scaling of the translation and of the points, so
the translation is kept on the unit sphere: ||t|| = 1 throughout; the pose has 5 degrees of
freedom (a rotation update exp([w]_x) R, left-multiplied, w in so(3), and a 2-vector in the
tangent plane of the sphere at t, followed by renormalisation). The points (3 each) are then
fully determined.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..primitives.camera import homogeneous, skew, so3_exp
from ..primitives.epipolar import triangulate
from .batch import check_count, prepare_batch

MIN_MATCHES_BA = 6  # the BA needs more residuals (4 per match) than unknowns (5 + 3 per match)


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
    camera (as in the paper). Each iteration solves the Levenberg-Marquardt system
    (J^T J + lambda diag(J^T J)) dz = -J^T r with analytic Jacobians, eliminating the points
    by a Schur complement (a 5x5 system per pair and a 3x3 one per point, O(M)), then
    updates R <- exp([dw]_x) R, t <- normalise(t + B dt), Y <- Y + dY. A step is accepted
    only if it lowers the cost (so the best iterate is kept) and lambda is divided by
    `damping_down`, else the state is kept and lambda multiplied by `damping_up` (the
    paper's schedule: start 0.1, / 3.5, x 1.5; 10 iterations at test time).
    Raises ValueError for a pair with fewer than 6 usable matches.
    """
    x0, x1, w, mask, batched = prepare_batch(x0, x1, weights, mask)
    if not batched:
        R, t = R[None], t[None]
    if R.shape != (x0.shape[0], 3, 3) or t.shape != (x0.shape[0], 3):
        raise ValueError(f"R, t must be [B, 3, 3], [B, 3] for B = {x0.shape[0]}, got "
                         f"{tuple(R.shape)}, {tuple(t.shape)}")
    R, t = R.to(x0.dtype), t.to(x0.dtype)
    t = t / t.norm(dim=-1, keepdim=True)
    Y, d0, d1 = triangulate(x0, x1, R, t)
    valid = mask & (d0 > 0) & (d1 > 0) & (w > 0)
    check_count(valid, w, MIN_MATCHES_BA, "the two-view bundle adjustment (matches in front "
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
