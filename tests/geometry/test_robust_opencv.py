"""OpenCV relative-pose estimation (the SuperGlue protocol), intrinsics scaling and the
epipolar error on synthetic data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from matchlab.evaluation.metrics import (angle_error_rotation, angle_error_translation,
                                         epipolar_error, pose_error)
from matchlab.geometry.primitives.camera import scale_intrinsics
from matchlab.geometry.robust.opencv import essential_ransac


def estimate_pose_opencv(k0, k1, K0, K1, threshold_px, seed=0):
    """(R, t, inliers) as numpy arrays, or None."""
    g = essential_ransac(k0, k1, K0, K1, threshold_px=threshold_px, seed=seed)
    return None if g is None else (g.R.numpy(), g.t.numpy(), g.inliers.numpy())


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def synthetic_pair(n=200, noise_px=0.0, seed=0):
    """Points in front of two cameras; returns kpts0, kpts1 [n, 2], K0, K1, T_0to1."""
    rng = np.random.default_rng(seed)
    K0 = np.array([[580.0, 0, 319.5], [0, 575.0, 239.5], [0, 0, 1]])
    K1 = np.array([[600.0, 0, 330.0], [0, 590.0, 245.0], [0, 0, 1]])
    R = rotation([0.2, 1.0, 0.1], 12.0)
    t = np.array([0.6, -0.1, 0.15])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    X0 = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(3, 8, n)], 1)
    X1 = X0 @ R.T + t
    assert (X1[:, 2] > 0).all()
    p0 = X0 @ K0.T
    p1 = X1 @ K1.T
    k0 = p0[:, :2] / p0[:, 2:] + rng.normal(0, noise_px, (n, 2)) if noise_px else p0[:, :2] / p0[:, 2:]
    k1 = p1[:, :2] / p1[:, 2:] + rng.normal(0, noise_px, (n, 2)) if noise_px else p1[:, :2] / p1[:, 2:]
    return k0, k1, K0, K1, T


def test_exact_recovery_noise_free():
    k0, k1, K0, K1, T = synthetic_pair()
    R, t, inliers = estimate_pose_opencv(k0, k1, K0, K1, threshold_px=1.0, seed=0)
    assert R.shape == (3, 3) and t.shape == (3,) and inliers.shape == (len(k0),)
    assert inliers.dtype == bool and inliers.mean() > 0.99
    assert angle_error_rotation(R, T[:3, :3]) < 1e-3
    assert angle_error_translation(t, T[:3, 3]) < 1e-3
    assert pose_error(T, R, t) < 1e-3
    assert abs(np.linalg.norm(t) - 1) < 1e-9


@pytest.mark.parametrize("noise_px,max_err", [(0.0, 1e-3), (0.5, 6.0)])
def test_recovery_with_outliers_is_deterministic_with_seed(noise_px, max_err):
    k0, k1, K0, K1, T = synthetic_pair(n=300, noise_px=noise_px, seed=1)
    rng = np.random.default_rng(2)
    out = rng.choice(len(k1), 90, replace=False)  # 30 % outliers
    k1 = k1.copy()
    k1[out] = rng.uniform([0, 0], [640, 480], (len(out), 2))
    a = estimate_pose_opencv(k0, k1, K0, K1, threshold_px=1.0, seed=7)
    b = estimate_pose_opencv(k0, k1, K0, K1, threshold_px=1.0, seed=7)
    assert a is not None and np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    R, t, inliers = a
    assert pose_error(T, R, t) < max_err  # plain 5-point RANSAC, no refinement: a few degrees at 0.5 px
    assert inliers[out].mean() < 0.1 and np.delete(inliers, out).mean() > 0.8


def test_too_few_points_and_mismatched_lengths():
    k0, k1, K0, K1, _ = synthetic_pair(n=4)
    assert estimate_pose_opencv(k0, k1, K0, K1, 1.0) is None
    with pytest.raises(ValueError):
        estimate_pose_opencv(k0, k1[:3], K0, K1, 1.0)


def test_scale_intrinsics():
    K = np.array([[1160.0, 0, 648.0], [0, 1160.0, 484.0], [0, 0, 1]])
    K2 = scale_intrinsics(K, (640 / 1296, 480 / 968))
    assert K2[0, 0] == pytest.approx(1160 * 640 / 1296) and K2[1, 1] == pytest.approx(1160 * 480 / 968)
    assert K2[0, 2] == pytest.approx(320.0) and K2[1, 2] == pytest.approx(484 * 480 / 968)
    assert np.allclose(scale_intrinsics(K, 0.5), np.diag([0.5, 0.5, 1]) @ K)
    assert K2[2].tolist() == [0, 0, 1]


def test_epipolar_error_zero_for_true_matches():
    k0, k1, K0, K1, T = synthetic_pair(n=50)
    err = epipolar_error(k0, k1, T, K0, K1)
    assert err.shape == (50,) and err.max() < 1e-12
    assert epipolar_error(k0, k1[::-1], T, K0, K1).max() > 1e-3
