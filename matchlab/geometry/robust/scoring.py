"""Model-quality losses for robust estimation: MSAC and MAGSAC++ (pure functions of the
squared residual relative to the threshold, numpy).

Both map s = r^2 / thr^2 (r: residual in pixels, thr: the inlier threshold) to a per-point
gain in [0, 1] (1 = exact fit, 0 = outlier at or past the threshold; a model's score is the
sum of its points' gains) and to an IRLS weight in (0, 1] for weighted least squares.

- MSAC: gain 1 - s (truncated quadratic), weight 1 - s.
- MAGSAC++ (Barath et al., CVPR 2020): the inlier noise sigma is not fixed but uniform on
  [0, sigma_max] with thr = k sigma_max, k the 0.99 quantile of the chi distribution with
  n = 4 degrees of freedom (a point correspondence is 4-D), k = 3.644. Marginalising the chi
  density over sigma gives the IRLS weight
      w(r) ~ G(a, u) - G(a, u_k),    a = (n - 1) / 2,  u = r^2 / (2 sigma_max^2),  u_k = k^2 / 2,
  (G: upper incomplete gamma) and the loss rho(r) = integral_0^r x w(x) dx, which integrates
  by parts to
      rho(r) ~ sigma_max^2 g(a + 1, u) + (r^2 / 2) (G(a, u) - G(a, u_k))
  (g: lower incomplete gamma); rho is constant past thr. Normalised by rho(thr) it depends
  on s alone: rho(s) = [g(a + 1, u) + u (G(a, u) - G(a, u_k))] / g(a + 1, u_k), u = u_k s.
  Gain = 1 - rho, weight = w(r) / w(0). Evaluated through a 10,001-entry table on s in
  [0, 1] (linear interpolation; the functions are smooth, the table error is < 1e-7).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

MAGSAC_DOF = 4
MAGSAC_K = 3.6437  # sqrt of the 0.99 quantile of chi^2 with 4 degrees of freedom (13.277)
TABLE_SIZE = 10_001


@lru_cache(maxsize=None)
def magsac_tables(dof: int = MAGSAC_DOF, k: float = MAGSAC_K) -> tuple[np.ndarray, np.ndarray]:
    """(loss, weight) [TABLE_SIZE] on s = linspace(0, 1): MAGSAC++'s normalised loss rho(s)
    (0 at s = 0, 1 at s = 1) and IRLS weight (1 at s = 0, 0 at s = 1)."""
    import torch

    a = (dof - 1) / 2.0
    uk = k * k / 2.0
    u = torch.linspace(0.0, 1.0, TABLE_SIZE, dtype=torch.float64) * uk
    gamma = lambda x: float(torch.lgamma(torch.tensor(x, dtype=torch.float64)).exp())
    lower = lambda b, x: gamma(b) * torch.special.gammainc(torch.as_tensor(b, dtype=torch.float64), x)
    upper = lambda b, x: gamma(b) * torch.special.gammaincc(torch.as_tensor(b, dtype=torch.float64), x)
    uk_t = torch.tensor(uk, dtype=torch.float64)
    tail = upper(a, uk_t)
    loss = (lower(a + 1, u) + u * (upper(a, u) - tail)) / lower(a + 1, uk_t)
    weight = (upper(a, u) - tail) / (gamma(a) - tail)
    return loss.numpy(), weight.clamp(min=0).numpy()


@dataclass(frozen=True)
class Scoring:
    """A loss by name: gain(s) and weight(s) for s = r^2 / thr^2 (arrays, any shape, s < 1)."""

    name: str = "msac"
    _tables: tuple = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.name not in SCORINGS:
            raise ValueError(f"unknown scoring {self.name!r}; choose from {', '.join(SCORINGS)}")
        if self.name == "magsac++":
            object.__setattr__(self, "_tables", magsac_tables())

    def gain(self, s: np.ndarray) -> np.ndarray:
        if self._tables is None:
            return 1.0 - s
        return 1.0 - np.interp(s, _GRID, self._tables[0])

    def weight(self, s: np.ndarray) -> np.ndarray:
        if self._tables is None:
            return 1.0 - s
        return np.interp(s, _GRID, self._tables[1])


SCORINGS = ("magsac++", "msac")
_GRID = np.linspace(0.0, 1.0, TABLE_SIZE)
