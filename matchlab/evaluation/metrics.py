"""Accuracy metrics shared by the benchmarks."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def error_auc(errors: Sequence[float], thresholds: Sequence[float]) -> list[float]:
    """Area under the cumulative error curve up to each threshold, normalised to [0, 1].

    The SuperGlue / LightGlue definition: sort the errors, recall(e) = fraction of errors <= e
    (failures are +inf), integrate recall from 0 to t by the trapezoid rule and divide by t.
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    if len(errors) == 0:
        return [0.0 for _ in thresholds]
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = []
    for t in thresholds:
        last = np.searchsorted(errors, t)
        x = np.concatenate([errors[:last], [t]])
        y = np.concatenate([recall[:last], [recall[last - 1]]])
        aucs.append(float(np.trapezoid(y, x) / t))
    return aucs
