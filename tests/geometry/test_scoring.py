"""MSAC and MAGSAC++ losses (matchlab.geometry.robust.scoring) against an independent derivation."""
import math

import numpy as np
import pytest

from matchlab.geometry.robust.scoring import MAGSAC_K, Scoring, magsac_tables


def upper_gamma_3_2(u: float) -> float:
    """G(3/2, u) in closed form: sqrt(pi)/2 erfc(sqrt(u)) + sqrt(u) exp(-u)."""
    return math.sqrt(math.pi) / 2 * math.erfc(math.sqrt(u)) + math.sqrt(u) * math.exp(-u)


def test_magsac_loss_is_the_integral_of_its_weight():
    """rho(r) = int_0^r x w(x) dx, normalised; w from the closed form for 4 DoF (a = 3/2),
    integrated numerically: an independent check of the table's incomplete-gamma algebra."""
    uk = MAGSAC_K ** 2 / 2
    r = np.linspace(0.0, 1.0, 20001)  # residual / threshold
    w = np.array([upper_gamma_3_2(uk * x * x) - upper_gamma_3_2(uk) for x in r])
    integrand = r * w
    rho = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) / 2 * np.diff(r))])
    rho /= rho[-1]
    scoring = Scoring("magsac++")
    s = r ** 2
    np.testing.assert_allclose(1.0 - scoring.gain(s), rho, atol=2e-6)
    np.testing.assert_allclose(scoring.weight(s), w / w[0], atol=2e-6)


def test_losses_shape():
    magsac, msac = Scoring("magsac++"), Scoring("msac")
    s = np.linspace(0, 1, 101)
    for scoring in (magsac, msac):
        gain, weight = scoring.gain(s), scoring.weight(s)
        assert gain[0] == pytest.approx(1.0) and gain[-1] == pytest.approx(0.0, abs=1e-12)
        assert (np.diff(gain) <= 0).all() and (np.diff(weight) <= 0).all()
    # MAGSAC++ down-weights mid-threshold residuals much more than MSAC's truncated quadratic
    assert magsac.gain(np.array(0.25)) < 0.3 < 0.75 == pytest.approx(msac.gain(np.array(0.25)))
    loss, weight = magsac_tables()
    assert loss.shape == weight.shape and loss[0] == 0 and weight[0] == pytest.approx(1.0)


def test_unknown_scoring_is_refused():
    with pytest.raises(ValueError, match="unknown scoring 'ransac'"):
        Scoring("ransac")
