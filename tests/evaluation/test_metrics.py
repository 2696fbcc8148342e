import numpy as np
import pytest

from matchlab.evaluation.metrics import error_auc


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
