import math

import numpy as np
import pytest

from matchlab.evaluation.metrics import (angle_error_rotation, angle_error_translation, corner_error,
                                         error_auc, pose_error)
from synthetic import rotation


def test_auc_of_known_curves():
    # all perfect -> 1; all failed -> 0
    assert error_auc([0, 0, 0], [1, 5]) == [1.0, 1.0]
    assert error_auc([np.inf, np.inf], [5]) == [0.0]
    # errors 0 and 2: curve (0,0) (0,.5) (2,1) (4,1) -> area 1.5 + 2 = 3.5 over 4
    assert error_auc([0.0, 2.0], [4])[0] == pytest.approx(0.875)
    # uniform errors on [0, 10]: recall(e) = e/10, AUC@10 = 0.5
    errors = np.linspace(0, 10, 10001)[1:]
    assert error_auc(errors, [10])[0] == pytest.approx(0.5, abs=1e-3)
    assert error_auc(errors, [5])[0] == pytest.approx(0.25, abs=1e-3)


def test_auc_of_hand_computed_curves():
    """Values worked out by hand from the definition (recall steps up at each sorted error,
    linear between them, flat after the last error below the threshold; an error equal to
    the threshold does not count)."""
    errs = [4.0, math.inf, 0.5, 0.5]  # recall 1/4, 2/4 at 0.5, 3/4 at 4, never 1
    # t=1: (0,0)-(0.5,0.25): 0.0625; 0.5 -> 1 flat at 0.5: 0.25         -> 0.3125 / 1
    # t=2: 0.0625 + 1.5 * 0.5 = 0.8125                                     -> / 2
    # t=10: 0.0625 + (0.5 + 0.75) / 2 * 3.5 + 6 * 0.75 = 6.75              -> / 10
    assert error_auc(errs, [1, 2, 10]) == pytest.approx([0.3125, 0.40625, 0.675], abs=1e-12)
    # errors at the threshold: t=1 sees none; t=2: (0,0)-(1,0.5)-(1,1)-(2,1): 0.25 + 1 -> / 2
    assert error_auc([1.0, 1.0], [1, 2]) == pytest.approx([0.0, 0.625], abs=1e-12)
    # the order of the errors does not matter; a NumPy array works as well as a list
    assert error_auc(np.array([0.5, 0.5, math.inf, 4.0]), [1, 2, 10]) == error_auc(errs, [1, 2, 10])


def test_auc_known_values():
    # recall steps at 1, 2, 3 -> area 1/6 + 1/2 + 5/6 + 2 (flat from 3 to 5) = 3.5, / 5
    assert error_auc([3.0, 1.0, 2.0], [5]) == pytest.approx([0.7])
    # up to 2: only errors strictly below the threshold count; the curve is then held flat:
    # 1/6 (0 -> 1) + 1/3 (flat at 1/3 from 1 to 2) = 1/2, / 2 (official definition)
    assert error_auc([1.0, 2.0, 3.0], [2])[0] == pytest.approx(0.25)
    # a failure (inf) caps the recall at 1/2: 0.25 + 0.5 * 4 = 2.25, / 5
    assert error_auc([1.0, math.inf], [5]) == pytest.approx([0.45])
    # all perfect -> 1; all beyond the threshold -> 0; empty -> 0
    assert error_auc([0.0, 0.0], [5, 10]) == pytest.approx([1.0, 1.0])
    assert error_auc([30.0, math.inf], [5, 10, 20]) == pytest.approx([0.0, 0.0, 0.0])
    assert error_auc([], [5]) == [0.0]
    # monotone in the threshold
    errs = np.random.default_rng(0).exponential(8.0, 100)
    a5, a10, a20 = error_auc(errs, [5, 10, 20])
    assert 0 < a5 < a10 < a20 < 1


def test_auc_matches_a_dense_integral():
    errs = np.random.default_rng(3).uniform(0, 30, 57)
    t = 10.0
    x = np.linspace(0, t, 200001)
    srt = np.sort(errs)
    below = srt[srt < t]
    # recall linearly interpolated between the sorted errors below t, starting at (0, 0),
    # then held flat up to t (np.interp holds the last value)
    recall = np.interp(x, np.r_[0, below], np.r_[0, np.arange(1, len(below) + 1) / len(srt)])
    dense = np.trapezoid(recall, x) / t
    assert error_auc(errs, [t])[0] == pytest.approx(dense, abs=1e-6)


def test_angle_errors():
    R = rotation(np.array([0, 0, 1.0]), math.radians(30.0))
    assert angle_error_rotation(R, np.eye(3)) == pytest.approx(30.0)
    assert angle_error_rotation(np.eye(3), np.eye(3)) == pytest.approx(0.0, abs=1e-6)
    # translation: direction only, scale-free and sign-agnostic
    assert angle_error_translation([1, 0, 0], [5, 0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert angle_error_translation([1, 0, 0], [-2, 0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert angle_error_translation([1, 0, 0], [1, 1, 0]) == pytest.approx(45.0)
    assert angle_error_translation([1, 0, 0], [-1, 1, 0]) == pytest.approx(45.0)
    assert angle_error_translation([1, 0, 0], [0, 1, 0]) == pytest.approx(90.0)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation(np.array([0, 1, 0.0]), math.radians(3.0)), [0, 0, 1]
    assert pose_error(T, np.eye(3), np.array([0.0, 0.1, 1.0])) == pytest.approx(
        max(3.0, math.degrees(math.atan(0.1))))
    assert pose_error(T, None, None) == math.inf


def test_corner_error():
    shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
    assert corner_error(np.eye(3), np.eye(3), (640, 480)) == 0.0
    assert corner_error(shift, np.eye(3), (640, 480)) == pytest.approx(5.0)
    # a scaling about the origin moves the corners by 0, |(w-1, 0)|, |(w-1, h-1)|, |(0, h-1)|
    w, h = 101, 51
    expected = (0 + 100 + np.hypot(100, 50) + 50) / 4
    assert corner_error(np.diag([2.0, 2.0, 1.0]), np.eye(3), (w, h)) == pytest.approx(expected)

