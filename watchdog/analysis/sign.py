"""A sign test by betting: the evidence a ratio check can still gather when errors come in spikes.

Where the window before the deploy shows heavy tails (a few intervals far out: one version's pod
restarting, or shocks of a shared dependency, which one version's history cannot tell apart), the
count test must judge ordinary intervals with a large dispersion factor and surge intervals not at
all until the bake shows which it is, and is then nearly blind: bench/decisions' twin-x1.5 (each
version's errors alone x3-x10 in one interval of ten) caught 15 of 500 regressions of x1.5, where
Kayenta's end-of-bake rank test caught all 500.

This test asks less of the data: in each interval, was the canary's error rate above the
baseline's? When the two versions are alike and share the traffic evenly, either is as likely
whatever the errors' bursts, spikes or shocks, for swapping the versions swaps the answer. Betting
a fraction lambda of the wealth on "worse" at even odds each interval, W_t = prod(1 + lambda*s_t)
with s_t = +1 or -1, is then a nonnegative martingale (Ville's inequality applies), and a mixture
over fixed fractions is one too. Ties (both rates equal, as two quiet intervals without errors)
and intervals whose traffic split strays from even by more than SPLIT_BAND bet nothing: which
intervals bet is symmetric in the versions, so the odds stay even.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from watchdog.analysis.eprocess import log_mix

FRACTIONS = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85])
"""The fractions of its wealth the mixture's bettors stake each interval, with equal weights: small
ones for a canary that is worse a little more often than not, large ones for one that is worse in
nearly every interval (x1.5 at 30 errors an interval: 19 intervals of 20)."""
_LOG_WEIGHTS = np.full(FRACTIONS.size, -math.log(FRACTIONS.size))
SPLIT_BAND = 0.1
"""How far the canary's share of an interval's requests may stray from one half for the interval
to bet: a canary on a tenth of the traffic has rates noisier than the baseline's, and skewed noise
does not come out above and below alike."""


class SignStream:
    """Per interval, whether the canary's bad rate was on the worse side of the baseline's, and
    the mixture of bettors on it (``direction``: ``increase`` or ``decrease``, the worse side)."""

    def __init__(self, direction: str = "increase") -> None:
        self.direction = direction
        self.log_e = np.zeros(FRACTIONS.size)
        self.worse = 0
        self.better = 0

    def update(self, bad_c: float, total_c: float, bad_b: float, total_b: float) -> None:
        if total_c <= 0 or total_b <= 0 or abs(total_c / (total_c + total_b) - 0.5) > SPLIT_BAND:
            return
        rate_c, rate_b = bad_c / total_c, bad_b / total_b
        if rate_c == rate_b:
            return
        above = rate_c > rate_b
        if self.direction == "decrease":
            above = not above
        if above:
            self.worse += 1
        else:
            self.better += 1
        self.log_e += np.log1p(FRACTIONS if above else -FRACTIONS)

    @property
    def log_e_value(self) -> float:
        return log_mix(self.log_e, _LOG_WEIGHTS)

    def to_state(self) -> dict[str, Any]:
        return {"log_e": self.log_e.tolist(), "worse": self.worse, "better": self.better}

    def load_state(self, state: dict[str, Any]) -> None:
        values = np.asarray(state.get("log_e", []), dtype=float)
        if values.shape == self.log_e.shape:
            self.log_e[:] = values
        self.worse = int(state.get("worse", 0))
        self.better = int(state.get("better", 0))
