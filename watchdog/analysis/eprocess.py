"""E-processes for counts: the anytime-valid core of every ratio decision (DESIGN §7).

An e-process E_t is a nonnegative supermartingale under "no regression" with E_0 = 1; Ville's
inequality bounds P(sup_t E_t >= 1/a) <= a, so the watchdog may look after every poll for hours and
still roll back a healthy deploy with probability at most ``a``.

Both tests here are mixtures of likelihood ratios over a fixed grid of alternatives with equal
weights. For an alternative on the bad side of the null, each per-interval likelihood ratio has
expectation exactly 1 at the boundary of the null and below 1 inside it (its expectation is linear
in the true parameter with the sign of the alternative), so every grid product is a supermartingale
under the whole composite null, and so is their average.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

# Alternatives from "10 % worse" to "50x worse", log-spaced: a regression worth rolling back is
# rarely smaller than 10 %, and large ones (a broken release) should cross the threshold within a
# poll or two. Weights are equal on the log scale.
_WORSE = np.exp(np.linspace(math.log(1.1), math.log(50.0), 24))


def _grid(direction: str) -> NDArray[np.float64]:
    if direction == "increase":
        return _WORSE.copy()
    if direction == "decrease":
        return 1.0 / _WORSE
    return np.concatenate([1.0 / _WORSE, _WORSE])


class TwoSampleRatio:
    """Canary against a concurrent baseline: is the canary's bad-event rate higher?

    Conditional on an interval's bad events x = x_c + x_b, the canary's share is
    Binomial(x, theta(rho)) with theta(rho) = rho*n_c / (rho*n_c + n_b), rho the ratio of bad rates,
    theta(1) under the null. Conditioning on each interval's totals makes a changing traffic split
    harmless, and it cancels whatever shared shock hits both arms in that interval.
    """

    def __init__(self, direction: str = "increase") -> None:
        self.direction = direction
        self.rho = _grid(direction)
        self.log_lr = np.zeros_like(self.rho)

    def update(self, bad_c: float, total_c: float, bad_b: float, total_b: float) -> None:
        if total_c <= 0 or total_b <= 0 or bad_c + bad_b <= 0:
            return  # an interval without events in both arms or without bad events says nothing
        theta0 = total_c / (total_c + total_b)
        theta = self.rho * total_c / (self.rho * total_c + total_b)
        self.log_lr += bad_c * np.log(theta / theta0) + bad_b * np.log1p(-theta) - bad_b * math.log1p(-theta0)

    @property
    def e_value(self) -> float:
        return float(math.exp(min(700.0, logsumexp(self.log_lr) - math.log(self.log_lr.size))))

    def to_state(self) -> dict[str, Any]:
        return {"log_lr": self.log_lr.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        values = np.asarray(state.get("log_lr", []), dtype=float)
        if values.shape == self.log_lr.shape:
            self.log_lr = values


class OneSampleRatio:
    """Canary against an SLO objective: is its bad-event rate above ``objective``?

    bad ~ Binomial(total, p) with the null p <= objective, mixed over p = objective * r on the grid
    of ratios r (capped below 1).
    """

    def __init__(self, objective: float, direction: str = "increase") -> None:
        if not 0 < objective < 1:
            raise ValueError("objective must lie strictly between 0 and 1")
        self.objective = objective
        p = objective * _grid(direction)
        self.p = np.unique(np.clip(p, 1e-12, 1 - 1e-9))
        self.p = self.p[self.p != objective]
        self.log_lr = np.zeros_like(self.p)

    def update(self, bad: float, total: float) -> None:
        if total <= 0:
            return
        good = max(0.0, total - bad)
        p0 = self.objective
        self.log_lr += bad * np.log(self.p / p0) + good * (np.log1p(-self.p) - math.log1p(-p0))

    @property
    def e_value(self) -> float:
        return float(math.exp(min(700.0, logsumexp(self.log_lr) - math.log(self.log_lr.size))))

    def to_state(self) -> dict[str, Any]:
        return {"log_lr": self.log_lr.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        values = np.asarray(state.get("log_lr", []), dtype=float)
        if values.shape == self.log_lr.shape:
            self.log_lr = values
