"""Minimal 1AC+gravity solvers and the refinement solvers on exact synthetic data, with
noise, and on degenerate input."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic import rotation

from matchlab.geometry.primitives.affine import affine_from_lafs, normalize_affine, pool_affines
from matchlab.geometry.primitives.camera import gravity_rotation, homogeneous
from matchlab.geometry.primitives.epipolar import decompose_essential, essential_from_pose, sampson_sq
from matchlab.geometry.primitives.homography import homography_jacobian, transfer_sq
from matchlab.geometry.solvers.linear import essential_5pt, essential_8pt, homography_dlt
from matchlab.geometry.solvers.minimal import (
    essential_1ac_gravity, homography_1ac_affine, homography_1ac_gravity, real_roots, yaw_rotation)


def planar_scene(rng: np.random.Generator, tilt: float = 0.3):
    """One AC of a plane seen by two cameras with gravity: returns (p, q, A, g0, g1, R, t, H)
    in normalised coordinates, with X1 = R X0 + t and q ~ H p."""
    while True:
        G0 = rotation(rng.normal(size=3), rng.uniform(0, tilt))
        G1 = rotation(rng.normal(size=3), rng.uniform(0, tilt))
        R = G1 @ yaw_rotation(np.tan(rng.uniform(-1.2, 1.2) / 2)) @ G0.T
        t = rng.normal(size=3)
        n = np.array([0, 0, -1.0]) + 0.5 * rng.normal(size=3)
        n /= np.linalg.norm(n)
        d = rng.uniform(2, 6)
        p = rng.uniform(-0.5, 0.5, size=2)
        X0 = homogeneous(p) * (-d / (n @ homogeneous(p)))  # plane n . X + d = 0
        X1 = R @ X0 + t
        if X0[2] > 0.5 and X1[2] > 0.5:
            break
    H = R - np.outer(t, n) / d   # X1 = R X0 + t = (R - t n^T / d) X0 on the plane
    q = X1[:2] / X1[2]
    A = homography_jacobian(H, p[None])[0]
    return p, q, A, G0[:, 1], G1[:, 1], R, t, H


def unit_h(H: np.ndarray) -> np.ndarray:
    H = H / np.linalg.norm(H, axis=(-2, -1), keepdims=True)
    return H * np.sign(H[..., 2:3, 2:3])


def test_gravity_rotation_maps_y_to_gravity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = rng.normal(size=3)
        G = gravity_rotation(g)
        assert np.allclose(G @ np.array([0, 1.0, 0]), g / np.linalg.norm(g), atol=1e-12)
        assert np.allclose(G.T @ G, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(G), 1)
    assert np.allclose(gravity_rotation(None), np.eye(3))
    assert np.allclose(gravity_rotation([0, -1, 0]) @ [0, 1, 0], [0, -1, 0])
    with pytest.raises(ValueError):
        gravity_rotation([0, 0, 0])


def test_affine_from_lafs_and_homography_jacobian():
    rng = np.random.default_rng(1)
    H = np.array([[1.1, 0.2, 5], [-0.1, 0.9, -3], [1e-4, -2e-4, 1]])
    x0 = rng.uniform(0, 500, size=(10, 2))
    J = homography_jacobian(H, x0)
    # finite differences
    eps = 1e-4
    x1 = homogeneous(x0) @ H.T
    for k in range(2):
        dx = np.zeros(2)
        dx[k] = eps
        y = homogeneous(x0 + dx) @ H.T
        fd = (y[:, :2] / y[:, 2:] - x1[:, :2] / x1[:, 2:]) / eps
        assert np.allclose(J[:, :, k], fd, atol=1e-5)
    # frames transported by J give back J as their AC
    A0 = rng.normal(size=(10, 2, 2)) * 5
    lafs0 = np.concatenate([A0, x0[:, :, None]], 2)
    lafs1 = np.concatenate([J @ A0, (x1[:, :2] / x1[:, 2:])[:, :, None]], 2)
    assert np.allclose(affine_from_lafs(lafs0, lafs1), J, atol=1e-9)
    pools = pool_affines(lafs0, lafs1, np.stack([np.arange(10), np.full(10, -1)], 1))
    assert np.allclose(pools[:, 0], J, atol=1e-9) and np.isnan(pools[:, 1]).all()
    K0 = np.array([[500, 0, 320], [0, 510, 240], [0, 0, 1.0]])
    K1 = np.array([[700, 0, 300], [0, 690, 200], [0, 0, 1.0]])
    Hn = np.linalg.inv(K1) @ H @ K0
    xn = (x0 - K0[:2, 2]) / K0[[0, 1], [0, 1]]
    assert np.allclose(normalize_affine(J, K0, K1), homography_jacobian(Hn, xn), atol=1e-9)


def test_real_roots_of_known_polynomials():
    # (x - 1)(x + 2)(x - 0.5)(x^2 + 1)(x - 3): roots 1, -2, 0.5, 3
    c = np.polynomial.polynomial.polyfromroots([1, -2, 0.5, 1j, -1j, 3]).real
    roots, rows = real_roots(np.stack([c, np.zeros(7), np.full(7, np.nan)]))
    assert np.allclose(np.sort(roots), [-2, 0.5, 1, 3]) and (rows == 0).all()
    # leading coefficient 0 (degree drop) still works
    roots, rows = real_roots(np.array([[-2.0, 1, 0, 0]]))
    assert np.allclose(roots, [2.0])


def test_essential_1ac_gravity_exact():
    rng = np.random.default_rng(2)
    scenes = [planar_scene(rng) for _ in range(200)]
    p, q, A, g0, g1, R_gt, t_gt, _ = (np.array(x) for x in zip(*scenes))
    hits = 0
    for i in range(len(scenes)):   # gravity differs per scene: one call each
        R, t, src = essential_1ac_gravity(p[i:i + 1], q[i:i + 1], A[i:i + 1],
                                          gravity_rotation(g0[i]), gravity_rotation(g1[i]))
        assert (src == 0).all() and 1 <= len(R) <= 4
        err = [max(np.abs(Ri - R_gt[i]).max(), np.abs(ti - t_gt[i] / np.linalg.norm(t_gt[i])).max())
               for Ri, ti in zip(R, t)]
        hits += min(err) < 1e-6
        # every returned model satisfies the 3 AC constraints on E
        E = essential_from_pose(R, t)
        assert np.allclose(np.einsum("i,mij,j->m", homogeneous(q[i]), E, homogeneous(p[i])), 0,
                           atol=1e-8)
    assert hits == len(scenes)


def test_essential_1ac_gravity_vectorised_upright():
    rng = np.random.default_rng(3)
    scenes = [planar_scene(rng, tilt=0.0) for _ in range(300)]
    p, q, A, g0, g1, R_gt, t_gt, _ = (np.array(x) for x in zip(*scenes))
    assert np.allclose(g0, [0, 1, 0]) and np.allclose(g1, [0, 1, 0])
    R, t, src = essential_1ac_gravity(p, q, A)
    for i in range(len(scenes)):
        mine = src == i
        err = np.abs(R[mine] - R_gt[i]).max((1, 2)) + np.abs(t[mine] - t_gt[i] / np.linalg.norm(t_gt[i])).max(1)
        assert err.min() < 1e-6


def test_homography_1ac_gravity_exact():
    rng = np.random.default_rng(4)
    for _ in range(200):
        p, q, A, g0, g1, _, _, H_gt = planar_scene(rng)
        H, src = homography_1ac_gravity(p[None], q[None], A[None], gravity_rotation(g0),
                                        gravity_rotation(g1))
        assert len(H) >= 1 and (src == 0).all()
        assert np.abs(unit_h(H) - unit_h(H_gt)).max((1, 2)).min() < 1e-6
        # the recovered H reproduces the AC it came from
        best = H[np.argmin(np.abs(unit_h(H) - unit_h(H_gt)).max((1, 2)))]
        assert transfer_sq(best[None], p, q)[0] < 1e-16
        assert np.allclose(homography_jacobian(best, p[None])[0], A, atol=1e-7)


def test_homography_1ac_gravity_pixels():
    """The same solver used on pixels through K (how the matcher calls it)."""
    rng = np.random.default_rng(5)
    K0 = np.array([[800, 0, 320], [0, 800, 240], [0, 0, 1.0]])
    K1 = np.array([[600, 0, 330], [0, 600, 250], [0, 0, 1.0]])
    p, q, A, g0, g1, _, _, Hn = planar_scene(rng)
    H_px = K1 @ Hn @ np.linalg.inv(K0)
    x0 = (homogeneous(p) @ K0.T)[:2]
    x1 = (homogeneous(q) @ K1.T)[:2]
    A_px = homography_jacobian(H_px, x0[None])[0]
    An = normalize_affine(A_px, K0, K1)
    H, _ = homography_1ac_gravity(p[None], q[None], An[None], gravity_rotation(g0),
                                  gravity_rotation(g1))
    Hpx = K1 @ H @ np.linalg.inv(K0)
    assert np.abs(unit_h(Hpx) - unit_h(H_px)).max((1, 2)).min() < 1e-6


def _noisy_errors(point_noise: float, affine_noise: float, n: int = 150, seed: int = 6):
    """Median / 90th-percentile rotation error (deg) of the best 1AC+gravity pose, and median
    grid transfer error of the best homography (normalised units x 1000 ~ px at f = 1000)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 5), np.linspace(-0.3, 0.3, 5)), -1).reshape(-1, 2)
    rot_err, h_err = [], []
    for _ in range(n):
        p, q, A, g0, g1, R_gt, _, H_gt = planar_scene(rng, tilt=0.2)
        pn = p + rng.normal(scale=point_noise, size=2)
        qn = q + rng.normal(scale=point_noise, size=2)
        An = A + affine_noise * np.abs(A).mean() * rng.normal(size=(2, 2))
        G0, G1 = gravity_rotation(g0), gravity_rotation(g1)
        R, _, _ = essential_1ac_gravity(pn[None], qn[None], An[None], G0, G1)
        cos = (np.trace(np.swapaxes(R, 1, 2) @ R_gt, axis1=1, axis2=2) - 1) / 2
        rot_err.append(np.rad2deg(np.arccos(np.clip(cos, -1, 1))).min() if len(R) else 180)
        H, _ = homography_1ac_gravity(pn[None], qn[None], An[None], G0, G1)
        gt = homogeneous(grid) @ H_gt.T
        gt = gt[:, :2] / gt[:, 2:]
        h_err.append(1000 * min([np.sqrt(transfer_sq(Hi[None], grid, gt)[0]).mean() for Hi in H] or [1e9]))
    return np.median(rot_err), np.percentile(rot_err, 90), np.median(h_err)


def test_minimal_solvers_with_noise():
    """Noise degrades the minimal models smoothly (measured: 1 px point noise at f = 1000 px
    gives 0.07 deg median yaw error; affine noise dominates, ~0.7 deg per 1 % of |A|)."""
    rot, rot90, herr = _noisy_errors(1e-3, 0.0)
    assert rot < 0.2 and rot90 < 1.0 and herr < 5
    rot1, _, herr1 = _noisy_errors(1e-3, 0.01)
    rot2, _, herr2 = _noisy_errors(1e-3, 0.02)
    assert rot < rot1 < 1.5 and rot1 < rot2 < 3.0 and herr1 < herr2 < 40
    # noise-free gravity but the wrong (upright) gravity prior breaks exactness
    p, q, A, g0, g1, R_gt, _, _ = planar_scene(np.random.default_rng(7), tilt=0.3)
    R, _, _ = essential_1ac_gravity(p[None], q[None], A[None])
    assert np.abs(R - R_gt).max((1, 2)).min() > 1e-3


def test_ac_solvers_degenerate_inputs():
    nan = np.full((1, 2), np.nan)
    eye = np.eye(2)[None]
    # non-finite, singular affine, empty: no model and no crash
    for args in [(nan, np.zeros((1, 2)), eye), (np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2, 2))),
                 (np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2, 2))),
                 (np.zeros((1, 2)), np.zeros((1, 2)), np.full((1, 2, 2), np.inf))]:
        R, t, src = essential_1ac_gravity(*args)
        assert R.shape == (0, 3, 3) and t.shape == (0, 3) and len(src) == 0
        H, src = homography_1ac_gravity(*args)
        assert H.shape == (0, 3, 3)
        H, src = homography_1ac_affine(*args)
        assert H.shape == (0, 3, 3)
    # no motion at all (identity AC between upright cameras): t is undetermined -> no model
    R, t, _ = essential_1ac_gravity(np.array([[0.1, 0.2]]), np.array([[0.1, 0.2]]), eye)
    assert len(R) == 0
    # pure rotation about y: every returned model is finite
    Ry = yaw_rotation(np.array(0.3))
    p = np.array([[0.1, -0.2]])
    y = homogeneous(p) @ Ry.T
    q = y[:, :2] / y[:, 2:]
    R, t, _ = essential_1ac_gravity(p, q, homography_jacobian(Ry, p))
    assert np.isfinite(R).all() and np.isfinite(t).all()
    with pytest.raises(ValueError):
        essential_1ac_gravity(np.zeros((2, 2)), np.zeros((1, 2)), eye)


def test_homography_dlt():
    rng = np.random.default_rng(8)
    H_gt = np.array([[1.2, 0.1, 30], [-0.2, 0.9, -10], [3e-4, -1e-4, 1]])
    x0 = rng.uniform(0, 640, size=(4, 2))
    y = homogeneous(x0) @ H_gt.T
    x1 = y[:, :2] / y[:, 2:]
    assert np.abs(homography_dlt(x0, x1) - H_gt).max() < 1e-6 * np.abs(H_gt).max()
    # over-determined with noise: close; outliers are not this solver's job
    x0 = rng.uniform(0, 640, size=(200, 2))
    y = homogeneous(x0) @ H_gt.T
    x1 = y[:, :2] / y[:, 2:] + rng.normal(scale=0.5, size=(200, 2))
    H = homography_dlt(x0, x1, weights=np.ones(200))
    assert np.sqrt(transfer_sq(H, x0, y[:, :2] / y[:, 2:])).mean() < 0.3
    # degenerate: too few, collinear, non-finite
    assert homography_dlt(x0[:3], x1[:3]) is None
    line = np.stack([np.linspace(0, 100, 6), np.linspace(0, 50, 6)], 1)
    assert homography_dlt(line, line * 2) is None
    assert homography_dlt(np.full((5, 2), np.nan), x1[:5]) is None


def test_essential_8pt_and_5pt():
    rng = np.random.default_rng(9)
    R_gt = rotation(rng.normal(size=3), 0.3)
    t_gt = rng.normal(size=3)
    t_gt /= np.linalg.norm(t_gt)
    X = np.concatenate([rng.uniform(-2, 2, size=(30, 2)), rng.uniform(4, 8, size=(30, 1))], 1)
    Y = X @ R_gt.T + t_gt
    p0, p1 = X[:, :2] / X[:, 2:], Y[:, :2] / Y[:, 2:]
    E_gt = essential_from_pose(R_gt, t_gt)
    E_gt /= np.linalg.norm(E_gt)
    E = essential_8pt(p0, p1)
    assert min(np.abs(E - E_gt).max(), np.abs(E + E_gt).max()) < 1e-6
    R, t, mask = decompose_essential(E, p0, p1)
    assert np.abs(R - R_gt).max() < 1e-6 and np.abs(t - t_gt).max() < 1e-6 and mask.all()
    assert sampson_sq(E, p0, p1).max() < 1e-20
    Es = essential_5pt(p0, p1)
    assert len(Es) >= 1
    Es = Es / np.linalg.norm(Es, axis=(1, 2), keepdims=True)
    assert np.minimum(np.abs(Es - E_gt).max((1, 2)), np.abs(Es + E_gt).max((1, 2))).min() < 1e-6
    # degenerate
    assert essential_8pt(p0[:7], p1[:7]) is None
    assert essential_8pt(np.zeros((10, 2)), np.zeros((10, 2))) is None
    assert essential_5pt(p0[:4], p1[:4]).shape == (0, 3, 3)


def test_residuals_broadcast_over_pools():
    H = np.stack([np.eye(3), np.diag([2.0, 2.0, 1.0])])
    p0 = np.zeros((5, 3, 2)) + 1
    p1 = np.zeros((5, 3, 2)) + 1
    r = transfer_sq(H[:, None, None], p0, p1)
    assert r.shape == (2, 5, 3) and np.allclose(r[0], 0) and np.allclose(r[1], 2)
    E = essential_from_pose(np.eye(3), np.array([1.0, 0, 0]))[None]
    assert sampson_sq(E[:, None, None], p0, p1).shape == (1, 5, 3)
    # one model per pair (batched pairs): E [B, 1, 3, 3] against points [B, N, 2]
    p1 = p1 + np.array([0.0, 0.5])
    assert np.allclose(sampson_sq(np.repeat(E, 5, 0)[:, None], p0, p1), 0.125)
