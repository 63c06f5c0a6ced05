"""An e-process for "the canary's latencies are the baseline's, only slower", over all buckets.

A histogram check's edge tests each see one split of the requests (slower than the edge or not),
and the best single split of a latency distribution carries well under the information of all its
buckets: on a 10 % slowdown the median edge sees about 70 % of it, and averaging four edges costs
another log(4) of evidence. This stream bets on one thing instead: that every latency is
multiplied by a factor ``s`` > 1. It reads the baseline's distribution from the window before the
deploy (data the test does not use), predicts from it each bucket's share under ``s``, and
multiplies, over the buckets, the conditional binomial likelihood ratios of the canary's share of
each bucket's requests, mixed over a grid of ``s``.

Why it is an e-process: conditional on each bucket's total, the canary's share of a bucket is
binomial with the traffic split when the two versions have the same distribution, independently
across buckets (Poisson arrivals), so each product has expectation 1. If the canary is instead
faster (``s`` < 1 in truth), every bucket's true share lies on the other side of the null from the
alternative's, and each factor's expectation is below 1. Conditioning on the observed request totals
instead of the unknown rates only narrows the shares' spread (a multivariate hypergeometric), which
keeps the products' expectation at or under 1 to the order that matters here. The predicted shares
are only alternatives: if the window before was unlike the baseline now, the test loses speed, not
validity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri

from watchdog.analysis.eprocess import accumulate, evidence, log_mix

SCALES = np.exp(np.exp(np.linspace(math.log(math.log(1.03)), math.log(math.log(4.0)), 14)))
"""Latency multipliers bet on: from 3 % slower to 4x, spaced evenly in log(log(s)) as the ratio grid
is (see :data:`watchdog.analysis.eprocess.SPAN`), with equal weights."""
_LOG_WEIGHTS = np.full(SCALES.size, -math.log(SCALES.size))


def predicted_ratios(
    bounds: list[float], cumulative: list[float], scales: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per scale, each bucket's probability under ``latency * s`` over its probability now.

    ``bounds`` are the finite, positive bucket bounds (sorted), ``cumulative`` the baseline's cumulative
    counts at them followed by the total. Between bounds the distribution is interpolated linearly
    in probit(F) against log(latency) (exact for a lognormal), and extrapolated along the first and
    last segments; empty buckets are given half a request so that no probability is 0 or 1."""
    total = cumulative[-1]
    log_b = np.log(np.asarray(bounds, dtype=float))
    cdf = np.clip(np.asarray(cumulative[:-1], dtype=float), 0.5, total - 0.5) / total
    z = ndtri(np.maximum.accumulate(cdf))
    if z.size == 1:  # one bound: a lognormal with the log-sd of a typical service (0.7)
        log_b, z = np.array([log_b[0], log_b[0] + 0.7]), np.array([z[0], z[0] + 1.0])
    z = z + 1e-6 * np.arange(z.size)  # strictly increasing, so the slopes stay positive

    def probit(log_x: NDArray[np.float64]) -> NDArray[np.float64]:
        inside = np.interp(log_x, log_b, z)
        low = z[0] + (log_x - log_b[0]) * (z[1] - z[0]) / (log_b[1] - log_b[0])
        high = z[-1] + (log_x - log_b[-1]) * (z[-1] - z[-2]) / (log_b[-1] - log_b[-2])
        return np.asarray(np.where(log_x < log_b[0], low, np.where(log_x > log_b[-1], high, inside)))

    def band_probs(cdf_at_bounds: NDArray[np.float64]) -> NDArray[np.float64]:
        rows = cdf_at_bounds.shape[0]
        padded = np.concatenate([np.zeros((rows, 1)), cdf_at_bounds, np.ones((rows, 1))], axis=1)
        return np.maximum(np.diff(padded, axis=1), 1e-12)

    bounds_log = np.asarray(log_b[: len(bounds)])
    now = band_probs(ndtr(probit(bounds_log))[None, :])
    shifted = band_probs(ndtr(probit(bounds_log[None, :] - np.log(scales)[:, None])))
    return np.asarray(shifted / now)


class ShiftStream:
    """The mixture over :data:`SCALES` of the products above, from the deploy's start, and its
    Shiryaev-Roberts late-onset detector (as :class:`~watchdog.analysis.eprocess.CountStream`
    keeps them)."""

    def __init__(self, bounds: list[float], cumulative: list[float]) -> None:
        """``bounds``: the finite bucket bounds the baseline's ``cumulative`` counts (then the
        total) were read at, in the window before the deploy. Bounds at or below zero have no
        logarithm: their requests count in the first bucket above zero."""
        keep = [i for i, b in enumerate(bounds) if b > 0]
        if not keep:
            raise ValueError("a shift needs a positive bucket bound")
        self.bounds = [float(bounds[i]) for i in keep]
        self.reference = [float(cumulative[i]) for i in keep] + [float(cumulative[-1])]
        self._rho = predicted_ratios(self.bounds, self.reference, SCALES)
        self._log_rho = np.log(self._rho)
        self._evidence = evidence(SCALES.size)
        self.log_e, self.log_sr = self._evidence  # views: never rebind them
        self.intervals = 0

    def update(self, canary: dict[float, float], baseline: dict[float, float], phi: float) -> None:
        """One interval's cumulative buckets of both versions (+Inf as ``math.inf``); ``phi`` is the
        dispersion factor the edges judge this interval with. A layout without every bound is
        skipped (the check reports it)."""
        if any(b not in canary or b not in baseline for b in self.bounds):
            return
        keys = [*self.bounds, math.inf]
        c = np.diff(np.array([canary[k] for k in keys]), prepend=0.0) / phi
        b = np.diff(np.array([baseline[k] for k in keys]), prepend=0.0) / phi
        n_c, n_b = canary[math.inf], baseline[math.inf]
        if n_c <= 0 or n_b <= 0:
            return
        self.intervals += 1
        x = c + b
        # canary share theta(rho) = rho*n_c / (rho*n_c + n_b) against n_c / (n_c + n_b), per bucket
        log_lr = self._log_rho @ c + (math.log(n_c + n_b) - np.log(self._rho * n_c + n_b)) @ x
        accumulate(self._evidence, log_lr)

    @property
    def log_e_value(self) -> float:
        return log_mix(self.log_e, _LOG_WEIGHTS)

    @property
    def log_detector(self) -> float:
        return log_mix(self.log_sr, _LOG_WEIGHTS)

    def scale_estimate(self) -> float:
        """The scale the evidence favours most (for the explanation)."""
        return float(SCALES[int(np.argmax(self.log_e))])

    def to_state(self) -> dict[str, Any]:
        return {
            "bounds": self.bounds,
            "reference": self.reference,
            "log_e": self.log_e.tolist(),
            "log_sr": self.log_sr.tolist(),
            "intervals": self.intervals,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ShiftStream | None:
        try:
            stream = cls(list(state["bounds"]), list(state["reference"]))
            log_e = np.asarray(state["log_e"], dtype=float)
            log_sr = np.asarray(state["log_sr"], dtype=float)
        except (KeyError, TypeError, ValueError):
            return None
        if log_e.shape == stream.log_e.shape and log_sr.shape == stream.log_sr.shape:
            stream.log_e[:], stream.log_sr[:] = log_e, log_sr
        stream.intervals = int(state.get("intervals", 0))
        return stream
