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

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri

from watchdog.analysis.eprocess import (
    SPAN_FLOOR_SHARE,
    SPAN_TOP_INTERVALS,
    accumulate,
    evidence,
    log_mix,
    pair_evidence_per_event,
)

SCALE_SPAN = (1.03, 4.0)
"""Latency multipliers bet on: from 3 % slower to 4x, unless a stream is given its own range."""
MIN_SCALE_POWER = 6.0
"""A fitted range's top is at least its lower end to this power: in log(log(s)) as wide as a ratio
span from x1.15 to x2.3, the narrowest a ratio check's is fitted to."""


@functools.cache
def scale_grid(span: tuple[float, float] = SCALE_SPAN) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The multipliers a stream bets on and the log of their weights: fourteen spaced evenly in
    log(log(s)) over ``span`` with equal weights, as the ratio grid is (see
    :data:`watchdog.analysis.eprocess.SPAN`), and where the span stops short of 4x, two light bets
    beyond it (at its top to the powers 1.6 and 2.6, up to 8x) so a large slowdown stays decisive."""
    low, high = span
    core = np.exp(np.exp(np.linspace(math.log(math.log(low)), math.log(math.log(high)), 14)))
    light = [high**1.6, high**2.6] if high < SCALE_SPAN[1] else []
    light = [s for s in light if s <= 2 * SCALE_SPAN[1]]
    weights = np.concatenate([np.ones(14), np.full(len(light), 0.3)])
    return np.concatenate([core, light]), np.log(weights / weights.sum())


RATIO_CAP = 20.0
"""The most a bucket's share is bet to grow or shrink by. Where the window before had no request
in a tail bucket (at 30 requests per interval, none above 1 s in an hour), the interpolated
distribution puts next to nothing there and more after any slowdown: ratios of 10^4 to 10^7.
Betting on them, a single baseline request in that bucket cost every multiplier 11 nats of
evidence, two or three polls of a x1.5 slowdown; capped, at most log(1 + 19 * share). Any
alternative keeps the test valid; x20 is more than a x4 slowdown gives a bucket it has data for."""

SCALES = scale_grid()[0]
"""The default multipliers (over :data:`SCALE_SPAN`)."""


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


def _capped(ratios: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(ratios, 1 / RATIO_CAP, RATIO_CAP)


def scale_span(
    bounds: list[float], cumulative: list[float], intervals: int, polls: int, log_threshold: float
) -> tuple[float, float]:
    """:data:`SCALE_SPAN` narrowed to the slowdowns whose detection time the weights decide, as
    :func:`watchdog.analysis.eprocess.bake_span` narrows a ratio check's span, for the same
    reasons: the lower end rises to the smallest slowdown whose expected evidence over the
    ``polls`` of the bake reaches SPAN_FLOOR_SHARE of ``log_threshold``, and the top comes down
    to the one whose expected evidence reaches it within SPAN_TOP_INTERVALS intervals (at 150
    requests per interval, x1.2).

    ``cumulative``: the baseline's cumulative counts at ``bounds`` (then the total) summed over
    ``intervals`` intervals before the deploy, deflated by the dispersion factor; the expected
    evidence per interval is the conditional binomial's relative entropy, bucket by bucket, for
    two versions that each see that traffic (an upper bound, as for ratio checks). Only data from
    before the deploy sets the range, so the weights are fixed before the first canary interval."""
    if intervals <= 0 or polls <= 0 or cumulative[-1] <= 0:
        return SCALE_SPAN
    per_interval = np.diff(np.asarray(cumulative, dtype=float), prepend=0.0) / intervals
    low_end, high_end = (math.log(math.log(s)) for s in SCALE_SPAN)
    fine = np.exp(np.exp(np.linspace(low_end, high_end, 400)))
    rho = _capped(predicted_ratios(bounds, cumulative, fine))
    gain = pair_evidence_per_event(rho) @ per_interval  # per interval, increasing in the scale
    seen = np.flatnonzero(gain * polls >= SPAN_FLOOR_SHARE * log_threshold)
    if seen.size == 0:  # nothing in the range is detectable: the default bets still count
        return SCALE_SPAN
    low = float(fine[seen[0]])
    fast = np.flatnonzero(gain * min(polls, SPAN_TOP_INTERVALS) >= log_threshold)
    top = float(fine[fast[0]]) if fast.size else SCALE_SPAN[1]
    return low, min(SCALE_SPAN[1], max(top, low**MIN_SCALE_POWER))


def scale_dispersion(bounds: list[float], history: list[list[float]]) -> tuple[float, float]:
    """Pearson's X^2 of one version's per-interval scores for "every latency x s" at s = 1
    (the direction the shift stream bets in), around the window's own distribution, and its
    degrees of freedom: X^2 / dof estimates how much more a latency distribution moves as a
    whole, interval to interval, than its requests' independent draws make it.

    The edges' factors do not measure this. When a version's latencies wobble together (a noisy
    neighbour, a GC pause: every request of that version a little slower for an interval), every
    bucket moves the same way at once; each edge sees one split of it, the shift stream adds them
    all up. With each version's latencies x exp(N(0, 0.2)) per interval at 50 req/s, the latency
    check rolled back 11 of 1,000 healthy deploys with the shift stream judged by the largest edge
    factor (the check's alpha: 0.5 %), 6 with this one as a floor under it.

    ``bounds``: finite positive bucket bounds, sorted; ``history``: per interval, the cumulative
    counts at them followed by the total."""
    rows = np.asarray(history, dtype=float)
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] != len(bounds) + 1:
        return 0.0, 0.0
    counts = np.diff(rows, axis=1, prepend=0.0)
    summed = rows.sum(axis=0)
    n = rows[:, -1]
    if summed[-1] <= 0:
        return 0.0, 0.0
    step = 1.1
    direction = (predicted_ratios(bounds, list(summed), np.array([step]))[0] - 1.0) / math.log(step)
    p = counts.sum(axis=0) / summed[-1]
    d = direction - p @ direction  # centred: the score of every interval is then sum(d * counts)
    variance = n * float(p @ d**2)
    ok = variance > 0
    if ok.sum() < 2:
        return 0.0, 0.0
    scores = counts[ok] @ d
    return float(np.sum(scores**2 / variance[ok])), float(ok.sum() - 1)


class ShiftStream:
    """The mixture over its multipliers (:func:`scale_grid`) of the products above, from the
    deploy's start, and its Shiryaev-Roberts late-onset detector (as
    :class:`~watchdog.analysis.eprocess.CountStream` keeps them)."""

    def __init__(
        self, bounds: list[float], cumulative: list[float], span: tuple[float, float] = SCALE_SPAN
    ) -> None:
        """``bounds``: the finite bucket bounds the baseline's ``cumulative`` counts (then the
        total) were read at, in the window before the deploy. Bounds at or below zero have no
        logarithm: their requests count in the first bucket above zero. ``span``: the
        multipliers that carry the weight (see :func:`scale_span`)."""
        keep = [i for i, b in enumerate(bounds) if b > 0]
        if not keep:
            raise ValueError("a shift needs a positive bucket bound")
        self.bounds = [float(bounds[i]) for i in keep]
        self.reference = [float(cumulative[i]) for i in keep] + [float(cumulative[-1])]
        self.span = span
        self.scales, self._log_weights = scale_grid(span)
        self._rho = _capped(predicted_ratios(self.bounds, self.reference, self.scales))
        self._log_rho = np.log(self._rho)
        self._evidence = evidence(self.scales.size)
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
        return log_mix(self.log_e, self._log_weights)

    @property
    def log_detector(self) -> float:
        return log_mix(self.log_sr, self._log_weights)

    def scale_estimate(self) -> float:
        """The scale the evidence favours most (for the explanation)."""
        return float(self.scales[int(np.argmax(self.log_e))])

    def to_state(self) -> dict[str, Any]:
        return {
            "bounds": self.bounds,
            "reference": self.reference,
            "span": list(self.span),
            "log_e": self.log_e.tolist(),
            "log_sr": self.log_sr.tolist(),
            "intervals": self.intervals,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ShiftStream | None:
        try:
            span = state.get("span") or SCALE_SPAN  # a state saved before spans were fitted
            low, high = (float(v) for v in span)
            stream = cls(list(state["bounds"]), list(state["reference"]), (low, high))
            log_e = np.asarray(state["log_e"], dtype=float)
            log_sr = np.asarray(state["log_sr"], dtype=float)
        except (KeyError, TypeError, ValueError):
            return None
        if log_e.shape == stream.log_e.shape and log_sr.shape == stream.log_sr.shape:
            stream.log_e[:], stream.log_sr[:] = log_e, log_sr
        stream.intervals = int(state.get("intervals", 0))
        return stream
