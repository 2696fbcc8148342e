"""Minimal solvers from one affine correspondence (AC) + gravity (numpy, float64,
vectorised over ACs); the non-minimal solvers that refine them are in `linear`.

Notation. An AC is (p, q, A): points p (image 0) and q (image 1) in NORMALISED image
coordinates (K^-1 applied) and the 2x2 local affine map A with dq = A dp (see
matchlab.geometry.primitives.affine). The relative pose maps camera-0 to camera-1 coordinates,
X1 = R X0 + t, so E = [t]_x R and q~^T E p~ = 0 with p~ = (p, 1).

Constraints of one AC on E (3 equations, linear in E):
  point:  q~^T E p~ = 0;
  affine: differentiating q~(p)^T E p~ = 0 along the patch gives
          A^T (E p~)[:2] + (E^T q~)[:2] = 0  (2 equations).
Constraints of one AC on a homography H (6 equations, linear in H), with L = [I2 | -q]:
  point:  L H p~ = 0;  affine: L H [I2; 0] - A (H[2] . p~) = 0 (the Jacobian of H is A).

Gravity. G0, G1 are the rotations with X_cam = G X_aligned, whose aligned frames have their
y axis along gravity (`matchlab.geometry.primitives.camera.gravity_rotation`). Two gravity-aligned frames
differ only by a yaw about y, so R = G1 Ry(theta) G0^T and, with t' = G1^T t,
E = G1 [t']_x Ry G0^T. In the rectified rays p^ = G0^T p~, q^ = G1^T q~ the three AC
equations are linear in t':
  point:  t' . ((Ry p^) x q^) = 0
  affine: (-B1 [Ry p^]_x + B2 Ry^T [q^]_x) t' = 0,  B1 = A^T G1[:2, :], B2 = G0[:2, :].
Parametrisation of the yaw (Cayley): tau = tan(theta / 2),
  (1 + tau^2) Ry(tau) = [[1 - tau^2, 0, 2 tau], [0, 1 + tau^2, 0], [-2 tau, 0, 1 - tau^2]],
  Ry(theta) = [[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]],
so the stacked 3x3 system M(tau) t' = 0 has entries quadratic in tau (after multiplying by
1 + tau^2) and a non-trivial t' exists iff det M(tau) = 0: a DEGREE-6 polynomial in tau,
solved by the eigenvalues of its 6x6 companion matrix (real roots kept). det M always has the
factor 1 + tau^2 (at tau = +-i, (1 + tau^2) Ry has rank 1 and its column space is a null
vector of M), so at most 4 real roots, i.e. at most 4 poses per AC; tau = inf (theta = pi) is
not represented. t' is the null vector of M(tau) (SVD), its sign chosen so the AC's point
triangulates in front of both cameras.

Homography from 1 AC + gravity: for each pose (R, t) of the essential solver, the plane
(H = R + t m^T, m = -n / d) follows from the 6 AC equations of H, linear in m: a 6x3 linear
least-squares problem. (The essential solver uses 3 of those 6 equations, the plane the
other 3, so with exact data the system is consistent.)
"""
from __future__ import annotations

import numpy as np

from ..primitives.camera import homogeneous, skew

# (1 + tau^2) Ry(tau) = RY[0] + tau RY[1] + tau^2 RY[2]
RY = np.stack([np.eye(3), np.array([[0, 0, 2.0], [0, 0, 0], [-2.0, 0, 0]]), np.diag([-1.0, 1, -1])])


def yaw_rotation(tau: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation about y from the Cayley parameter tau = tan(theta / 2)."""
    tau = np.asarray(tau, dtype=np.float64)
    out = RY[0] + tau[..., None, None] * RY[1] + (tau ** 2)[..., None, None] * RY[2]
    return out / (1 + tau ** 2)[..., None, None]


def _polymul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched product of polynomials with ascending coefficients [B, n] x [B, m]."""
    out = np.zeros(a.shape[:-1] + (a.shape[-1] + b.shape[-1] - 1,))
    for i in range(a.shape[-1]):
        out[..., i:i + b.shape[-1]] += a[..., i:i + 1] * b
    return out


def _det3_poly(e: np.ndarray) -> np.ndarray:
    """det of a [B, 3, 3] matrix of polynomials [B, 3, 3, d] (ascending) -> [B, 3d - 2]."""
    terms = [((0, 1, 2), 1), ((1, 2, 0), 1), ((2, 0, 1), 1),
             ((0, 2, 1), -1), ((2, 1, 0), -1), ((1, 0, 2), -1)]
    out = 0
    for (i, j, k), sign in terms:
        out = out + sign * _polymul(_polymul(e[:, 0, i], e[:, 1, j]), e[:, 2, k])
    return out


def real_roots(coeffs: np.ndarray, imag_tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Real roots of polynomials with ascending coefficients [B, d + 1].

    Returns (roots [M], row [M]): which polynomial each root belongs to. A root is real when
    |imag| <= imag_tol * max(1, |root|). Rows whose coefficients are all ~0 (an identically
    vanishing polynomial: degenerate input) or not finite give no roots."""
    coeffs = np.asarray(coeffs, dtype=np.float64)
    b, d = coeffs.shape[0], coeffs.shape[1] - 1
    scale = np.abs(coeffs).max(1) if b else np.zeros(0)
    ok = np.isfinite(coeffs).all(1) & (scale > 1e-300)
    c = np.where(ok[:, None], coeffs / np.where(ok, scale, 1)[:, None], 0)
    lead_ok = ok & (np.abs(c[:, -1]) > 1e-10)
    roots, rows = [], []
    idx = np.nonzero(lead_ok)[0]
    if len(idx):
        comp = np.zeros((len(idx), d, d))
        comp[:, 1:, :-1] = np.eye(d - 1)
        comp[:, :, -1] = -c[idx, :-1] / c[idx, -1:]
        ev = np.linalg.eigvals(comp)
        real = np.abs(ev.imag) <= imag_tol * np.maximum(1, np.abs(ev.real))
        r, k = np.nonzero(real)
        roots.append(ev.real[r, k])
        rows.append(idx[r])
    for i in np.nonzero(ok & ~lead_ok)[0]:  # degree drops: trim and solve alone (rare)
        ci = c[i]
        nz = np.nonzero(np.abs(ci) > 1e-10)[0]
        if len(nz) == 0 or nz[-1] == 0:
            continue
        ev = np.roots(ci[:nz[-1] + 1][::-1])
        ev = ev[np.abs(ev.imag) <= imag_tol * np.maximum(1, np.abs(ev.real))].real
        roots.append(ev)
        rows.append(np.full(len(ev), i))
    if not roots:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(roots), np.concatenate(rows).astype(np.int64)


def _valid_acs(p0: np.ndarray, p1: np.ndarray, A: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        det = A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]
    finite = np.isfinite(p0).all(1) & np.isfinite(p1).all(1) & np.isfinite(A).all((1, 2))
    return finite & (np.abs(np.nan_to_num(det)) > 1e-9)


def _as_batch(p0, p1, A) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p0 = np.asarray(p0, dtype=np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1, 2)
    A = np.asarray(A, dtype=np.float64).reshape(-1, 2, 2)
    if not len(p0) == len(p1) == len(A):
        raise ValueError(f"p0, p1 and A must have the same length, got {len(p0)}, {len(p1)}, {len(A)}")
    return p0, p1, A


def essential_1ac_gravity(p0: np.ndarray, p1: np.ndarray, A: np.ndarray,
                          G0: np.ndarray | None = None, G1: np.ndarray | None = None,
                          imag_tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative poses from single ACs with known gravity (see the module docstring).

    p0, p1: [B, 2] normalised points; A: [B, 2, 2] normalised ACs; G0, G1: [3, 3] gravity
    rotations (None: upright, identity). Returns (R [M, 3, 3], t [M, 3] unit, source [M]):
    every real solution of every AC, `source` naming the AC it came from. Invalid ACs
    (non-finite, singular A) and identically vanishing polynomials give no solution.
    """
    p0, p1, A = _as_batch(p0, p1, A)
    G0 = np.eye(3) if G0 is None else np.asarray(G0, np.float64)
    G1 = np.eye(3) if G1 is None else np.asarray(G1, np.float64)
    keep = np.nonzero(_valid_acs(p0, p1, A))[0]
    empty = (np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    if len(keep) == 0:
        return empty
    ph = homogeneous(p0[keep]) @ G0          # rows are (G0^T p~)^T
    qh = homogeneous(p1[keep]) @ G1
    B1 = np.swapaxes(A[keep], 1, 2) @ G1[:2]  # [b, 2, 3]
    B2 = G0[:2]
    Sq = skew(qh)
    Ms = []
    for k in range(3):
        v = ph @ RY[k].T                       # RY[k] p^
        rows = -B1 @ skew(v) + (B2 @ RY[k].T) @ Sq
        Ms.append(np.concatenate([np.cross(v, qh)[:, None], rows], 1))
    M = np.stack(Ms, -1)                       # [b, 3, 3, 3]: entry polynomials in tau
    # normalise each row (equation) so the polynomial's scale does not depend on the data's
    M = M / np.maximum(np.abs(M).max(axis=(2, 3), keepdims=True), 1e-300)
    coeffs = _det3_poly(M)                     # [b, 7]
    taus, rows = real_roots(coeffs, imag_tol)
    if len(taus) == 0:
        return empty
    Mt = M[rows, :, :, 0] + taus[:, None, None] * M[rows, :, :, 1] + \
        (taus ** 2)[:, None, None] * M[rows, :, :, 2]
    _, s, vh = np.linalg.svd(Mt)
    t_r = vh[:, -1]
    # a 2-d null space means the AC does not fix t (e.g. zero translation): no model
    good = s[:, 1] > 1e-9 * np.maximum(s[:, 0], 1e-300)
    R = G1[None] @ yaw_rotation(taus) @ G0.T[None]
    t = t_r @ G1.T
    source = keep[rows]
    R, t, source = R[good], t[good], source[good]
    # cheirality of the AC's own point: depths l0, l1 with l1 q~ = l0 R p~ + t
    pr = np.einsum("mij,mj->mi", R, homogeneous(p0[source]))
    q = homogeneous(p1[source])
    # least squares for [pr, -q] [l0, l1]^T = -t
    a11, a12, a22 = (pr * pr).sum(1), -(pr * q).sum(1), (q * q).sum(1)
    b1, b2 = -(pr * t).sum(1), (q * t).sum(1)
    det = a11 * a22 - a12 ** 2
    l0 = (a22 * b1 - a12 * b2) / np.where(np.abs(det) > 1e-300, det, 1)
    l1 = (a11 * b2 - a12 * b1) / np.where(np.abs(det) > 1e-300, det, 1)
    flip = (l0 + l1) < 0
    t[flip] *= -1
    return R, t, source


def homography_from_pose_ac(R: np.ndarray, t: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                            A: np.ndarray) -> np.ndarray:
    """[M, 3, 3] homographies H = R + t m^T (normalised coordinates) whose plane m fits the
    6 AC equations in the least-squares sense; R [M, 3, 3], t [M, 3], ACs p0, p1 [M, 2],
    A [M, 2, 2]. Rows whose 6x3 system is rank-deficient give NaN."""
    M = len(R)
    pt = homogeneous(p0)                                   # [M, 3]
    L = np.concatenate([np.broadcast_to(np.eye(2), (M, 2, 2)), -p1[:, :, None]], 2)  # [M, 2, 3]
    Lt = np.einsum("mij,mj->mi", L, t)                     # [M, 2]
    LR = L @ R                                             # [M, 2, 3]
    r3p = np.einsum("mj,mj->m", R[:, 2], pt)               # R[2] . p~
    G = np.zeros((M, 6, 3))
    g = np.zeros((M, 6))
    G[:, :2] = Lt[:, :, None] * pt[:, None, :]
    g[:, :2] = -np.einsum("mij,mj->mi", LR, pt)
    for a in range(2):
        for b in range(2):
            row = 2 + 2 * a + b
            G[:, row] = -(A[:, a, b] * t[:, 2])[:, None] * pt
            G[:, row, b] += Lt[:, a]
            g[:, row] = -(LR[:, a, b] - A[:, a, b] * r3p)
    GtG = np.swapaxes(G, 1, 2) @ G
    Gtg = np.einsum("mji,mj->mi", G, g)
    ok = np.linalg.cond(GtG) < 1e12 if M else np.zeros(0, bool)
    m = np.full((M, 3), np.nan)
    if ok.any():
        m[ok] = np.linalg.solve(GtG[ok], Gtg[ok][..., None])[..., 0]
    return R + t[:, :, None] * m[:, None, :]


def homography_1ac_gravity(p0: np.ndarray, p1: np.ndarray, A: np.ndarray,
                           G0: np.ndarray | None = None, G1: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Homographies from single ACs with known gravity, in normalised coordinates.

    Returns (H [M, 3, 3] with q~ ~ H p~, source [M]): one homography per real yaw root of
    `essential_1ac_gravity` (the plane from the 6x3 least-squares problem). Pixel
    homographies are K1 H K0^-1. Invalid / degenerate ACs give no model."""
    p0, p1, A = _as_batch(p0, p1, A)
    R, t, source = essential_1ac_gravity(p0, p1, A, G0, G1)
    if len(R) == 0:
        return np.zeros((0, 3, 3)), source
    H = homography_from_pose_ac(R, t, p0[source], p1[source], A[source])
    good = np.isfinite(H).all((1, 2))
    return H[good], source[good]


def homography_1ac_affine(p0: np.ndarray, p1: np.ndarray, A: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The affinity of each AC as a homography [[A, p1 - A p0], [0, 0, 1]]: (H [M, 3, 3],
    source [M]). Gravity-free, exact only for fronto-parallel views; a seed for LO."""
    p0, p1, A = _as_batch(p0, p1, A)
    keep = np.nonzero(_valid_acs(p0, p1, A))[0]
    H = np.zeros((len(keep), 3, 3))
    H[:, :2, :2] = A[keep]
    H[:, :2, 2] = p1[keep] - np.einsum("mij,mj->mi", A[keep], p0[keep])
    H[:, 2, 2] = 1
    return H, keep
