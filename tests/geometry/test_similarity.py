"""Umeyama 7-DoF similarity: exact recovery, noise, no reflections, degenerate inputs."""
from __future__ import annotations

import numpy as np
import pytest

from matchlab.geometry.similarity import Similarity, umeyama


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


@pytest.mark.parametrize("seed", range(5))
def test_recovers_known_similarity(seed):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(20, 3)) * rng.uniform(0.1, 10)
    truth = Similarity(float(rng.uniform(0.01, 100)), random_rotation(rng), rng.normal(size=3) * 50)
    sim = umeyama(src, truth.apply(src))
    assert sim.scale == pytest.approx(truth.scale, rel=1e-9)
    assert np.allclose(sim.rotation, truth.rotation, atol=1e-9)
    assert np.allclose(sim.translation, truth.translation, atol=1e-7 * (1 + truth.scale))
    assert np.allclose(sim.inverse().apply(sim.apply(src)), src, atol=1e-8)
    assert np.allclose(sim.matrix() @ np.r_[src[0], 1], np.r_[truth.apply(src[0]), 1])


def test_least_squares_under_noise_and_rigid_mode():
    rng = np.random.default_rng(7)
    src = rng.uniform(-5, 5, size=(200, 3))
    truth = Similarity(2.5, random_rotation(rng), np.array([1.0, -2.0, 3.0]))
    dst = truth.apply(src) + rng.normal(scale=0.01, size=src.shape)
    sim = umeyama(src, dst)
    assert abs(sim.scale - 2.5) < 1e-3
    residual = np.linalg.norm(sim.apply(src) - dst, axis=1)
    assert np.sqrt((residual ** 2).mean()) < 0.02  # ~ the noise level, sqrt(3) * 0.01
    # it is the least-squares optimum: perturbing it only makes things worse
    for delta in (1e-3, -1e-3):
        worse = Similarity(sim.scale + delta, sim.rotation, sim.translation)
        assert ((worse.apply(src) - dst) ** 2).sum() > ((sim.apply(src) - dst) ** 2).sum()
    rigid = umeyama(src, truth.apply(src) / 2.5, with_scale=False)
    assert rigid.scale == 1.0


def test_reflection_is_never_returned():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(10, 3))
    mirrored = src * np.array([1.0, 1.0, -1.0])  # best orthogonal fit would be a reflection
    sim = umeyama(src, mirrored)
    assert np.linalg.det(sim.rotation) == pytest.approx(1.0)
    assert np.allclose(sim.rotation @ sim.rotation.T, np.eye(3), atol=1e-12)


def test_collinear_points_still_align_the_points():
    t = np.linspace(0, 1, 6)[:, None]
    src = t * np.array([[1.0, 2.0, 0.5]])
    truth = Similarity(3.0, random_rotation(np.random.default_rng(1)), np.array([0.0, 1.0, 2.0]))
    sim = umeyama(src, truth.apply(src))
    assert np.allclose(sim.apply(src), truth.apply(src), atol=1e-9)
    assert np.linalg.det(sim.rotation) == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        umeyama(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        umeyama(np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="coincide"):
        umeyama(np.ones((5, 3)), np.random.default_rng(0).normal(size=(5, 3)))
    bad = np.zeros((4, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        umeyama(bad, np.zeros((4, 3)))
