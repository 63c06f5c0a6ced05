"""The rules ``bench/decisions.py`` compares the engine with, each run on the same recordings.

Every method takes a :class:`~bench.scenarios.Scenario` and returns the recording time (seconds since
the deploy) of its rollback decision, or ``None`` when it lets the deploy pass. A method that a family
does not fit (Kayenta has no SLO mode) is left out by :func:`applies`.

- ``oracle``: Wald's SPRT of the *true* alternative against the null, threshold ``log(1/alpha)`` on
  the cumulative log-likelihood ratio, no lower boundary. It knows the regression's size and onset
  and each arm's expected traffic (for healthy runs: the family's nominal alternative). Two-sample
  (canary vs baseline): conditional on an interval's bad events ``x_c + x_b``, the canary's share is
  Binomial with ``theta = rho*lam_c / (rho*lam_c + lam_b)`` (exact for Poisson arrivals), and
  ``theta0 = lam_c / (lam_c + lam_b)``. Latency: the same per bucket, with ``rho_j`` the bucket's
  probability ratio, multiplied over buckets. SLO (one-sample): Binomial(total, p) with ``p`` the true
  rate against ``p0 = objective``. It tests only the check that carries the regression, at ``alpha``.
  With gamma bursts (overdispersed families) it also knows the true dispersion factor ``1 + mu/k``
  and divides its log-likelihood ratio by it (quasi-likelihood), which keeps it near ``alpha``.
- ``kayenta``: Kayenta's judge, once, at the end of the bake: one-sided Mann-Whitney U (scipy) of the
  canary's per-interval values against the baseline's: error ratio for ``errors``, the interpolated
  p99 (``histogram_quantile(0.99, ...)``) for ``latency``; each check at ``alpha / checks``.
- ``threshold``: an Argo Rollouts / Flagger analysis with typical settings. A poll fails when the
  canary's *interval* error ratio exceeds ``max(1 %, 1.5 x the baseline's)`` (Flagger's
  ``request-success-rate`` ``thresholdRange.min: 99``, with a relative guard for services whose
  normal error rate is near 1 %), or, with ``compare: slo``, the objective; or when the canary's
  interval p99 exceeds ``max(500 ms, 1.5 x the baseline's)`` (Flagger's ``request-duration``
  ``max: 500``). The 5th failed poll rolls back (Flagger ``threshold: 5``; Argo ``failureLimit: 4``).
- ``naive``: a fixed-sample test repeated on the cumulative counts at every poll, first rejection
  rolls back: one-sided pooled two-proportion z-test (two-sample), exact binomial test against the
  objective (slo), and for latency the z-test on the share of requests slower than the family's
  ``slow_edge``; each check at ``alpha / checks`` (the engine's split).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binom, mannwhitneyu, norm

from bench.scenarios import BUCKET_KEYS, BUCKETS, Scenario

Method = Callable[[Scenario, float], float | None]

THRESHOLD_RATIO_FLOOR = 0.01
THRESHOLD_LATENCY_FLOOR = 0.5
THRESHOLD_RELATIVE = 1.5
THRESHOLD_FAILED_POLLS = 5

Array = NDArray[np.float64]


def ratio_series(
    s: Scenario, check: str = "errors"
) -> tuple[Array, Array, Array, Array | None, Array | None]:
    """Times, canary bad and total, baseline bad and total (None without a baseline) per poll."""
    data = s.recording["checks"][check]
    times = np.array([t for t, _ in data["canary"]], dtype=float)
    bad_c = np.array([v["bad"] for _, v in data["canary"]], dtype=float)
    tot_c = np.array([v["total"] for _, v in data["canary"]], dtype=float)
    if "baseline" not in data:
        return times, bad_c, tot_c, None, None
    bad_b = np.array([v["bad"] for _, v in data["baseline"]], dtype=float)
    tot_b = np.array([v["total"] for _, v in data["baseline"]], dtype=float)
    return times, bad_c, tot_c, bad_b, tot_b


def hist_series(s: Scenario, check: str = "latency") -> tuple[Array, Array, Array]:
    """Times and per-bucket (non-cumulative) counts of canary and baseline, shape (polls, buckets)."""
    data = s.recording["checks"][check]
    times = np.array([t for t, _ in data["canary"]], dtype=float)
    arms = []
    for arm in ("canary", "baseline"):
        cum = np.array([[v[k] for k in BUCKET_KEYS] for _, v in data[arm]], dtype=float)
        arms.append(np.diff(cum, axis=1, prepend=0.0))
    return times, arms[0], arms[1]


def histogram_quantile(q: float, counts: Array) -> Array:
    """Prometheus' ``histogram_quantile`` per row of non-cumulative bucket counts (NaN when empty):
    linear interpolation inside the bucket holding the rank; the +Inf bucket gives the last edge."""
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    rank = q * total
    out = np.full(len(counts), np.nan)
    uppers = np.asarray(BUCKETS)
    for i in range(len(counts)):
        if total[i] <= 0:
            continue
        j = int(np.searchsorted(cum[i], rank[i], side="left"))
        if j >= len(uppers):
            out[i] = uppers[-1]
            continue
        lower = 0.0 if j == 0 else uppers[j - 1]
        below = 0.0 if j == 0 else cum[i, j - 1]
        inside = counts[i, j]
        out[i] = uppers[j] if inside <= 0 else lower + (uppers[j] - lower) * (rank[i] - below) / inside
    return out


def _first_crossing(times: Array, values: Array, bound: float) -> float | None:
    hit = np.flatnonzero(values >= bound)
    return float(times[hit[0]]) if hit.size else None


def _binom_llr(k: Array, n: Array, theta1: Array, theta0: Array) -> Array:
    """Per-poll log-likelihood ratio of Binomial(n, theta1) against Binomial(n, theta0) at k."""
    with np.errstate(divide="ignore", invalid="ignore"):
        llr = k * np.log(theta1 / theta0) + (n - k) * (np.log1p(-theta1) - np.log1p(-theta0))
    return np.where(n > 0, llr, 0.0)


def oracle(s: Scenario, alpha: float) -> float | None:
    """Wald's SPRT of the true (nominal) alternative; see the module docstring."""
    f, truth = s.family, s.truth
    bound = math.log(1 / alpha)
    if f.kind == "latency":
        times, c, b = hist_series(s)
        lam_c, lam_b = truth.lam_c[:, None], truth.lam_b[:, None]
        q_b = np.maximum(truth.q_b[None, :], 1e-300)
        theta0 = np.broadcast_to(lam_c / (lam_c + lam_b), c.shape)
        theta1 = lam_c * truth.q_c / (lam_c * truth.q_c + lam_b * q_b)
        llr = _binom_llr(c, c + b, theta1, theta0).sum(axis=1)
        return _first_crossing(times, np.cumsum(llr), bound)
    times, bad_c, tot_c, bad_b, _ = ratio_series(s)
    if f.kind == "slo":
        assert f.objective is not None
        p0 = np.full_like(times, f.objective)
        p1 = np.minimum(f.objective * truth.rho, 1 - 1e-12)
        llr = _binom_llr(bad_c, tot_c, p1, p0) / dispersion_factor(s, truth.lam_c)
        return _first_crossing(times, np.cumsum(llr), bound)
    assert bad_b is not None
    # an arm's own spikes move the canary's expected share; the oracle knows each one
    spike_c = truth.spike_c if truth.spike_c.size else 1.0
    spike_b = truth.spike_b if truth.spike_b.size else 1.0
    lam_c, lam_b = truth.lam_c * spike_c, truth.lam_b * spike_b
    theta0 = lam_c / (lam_c + lam_b)
    theta1 = truth.rho * lam_c / (truth.rho * lam_c + lam_b)
    llr = _binom_llr(bad_c, bad_c + bad_b, theta1, theta0) / dispersion_factor(s, truth.lam_b)
    return _first_crossing(times, np.cumsum(llr), bound)


def dispersion_factor(s: Scenario, lam: Array) -> Array | float:
    """The true variance inflation of an interval's bad count under gamma bursts with shape k:
    ``1 + mu / k`` for an expected ``mu`` bad events (1 without bursts), a shared shock's
    included. The oracle divides its log-likelihood ratio by it (a quasi-likelihood), as if it
    knew the burst process and every shock too."""
    f = s.family
    if f.dispersion <= 0:
        return 1.0
    shock = s.truth.shock if s.truth.shock.size else 1.0
    return 1.0 + lam * f.p * shock / f.dispersion


def _ratios(bad: Array, total: Array) -> Array:
    ok = total > 0
    return bad[ok] / total[ok]


def kayenta(s: Scenario, alpha: float) -> float | None:
    """Mann-Whitney U on per-interval values, judged once at the end of the bake."""
    f = s.family
    share = alpha / len(f.checks)
    failed = False
    times, bad_c, tot_c, bad_b, tot_b = ratio_series(s)
    assert bad_b is not None and tot_b is not None
    failed |= _mw_greater(_ratios(bad_c, tot_c), _ratios(bad_b, tot_b)) < share
    if f.kind == "latency":
        _, c, b = hist_series(s)
        p99_c, p99_b = histogram_quantile(0.99, c), histogram_quantile(0.99, b)
        failed |= _mw_greater(p99_c[~np.isnan(p99_c)], p99_b[~np.isnan(p99_b)]) < share
    return float(times[-1]) if failed else None


def _mw_greater(x: Array, y: Array) -> float:
    """One-sided p-value that x tends to exceed y; 1 when either side is empty or all values tie."""
    if x.size == 0 or y.size == 0 or np.ptp(np.concatenate([x, y])) == 0:
        return 1.0
    return float(mannwhitneyu(x, y, alternative="greater").pvalue)


def threshold(s: Scenario, alpha: float) -> float | None:
    """Argo/Flagger-style: per-poll thresholds, roll back at the 5th failed poll (alpha unused)."""
    del alpha
    f = s.family
    times, bad_c, tot_c, bad_b, tot_b = ratio_series(s)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_c = np.where(tot_c > 0, bad_c / tot_c, np.nan)
        if f.kind == "slo":
            assert f.objective is not None
            limit = np.full_like(r_c, f.objective)
        else:
            assert bad_b is not None and tot_b is not None
            r_b = np.where(tot_b > 0, bad_b / tot_b, 0.0)
            limit = np.maximum(THRESHOLD_RATIO_FLOOR, THRESHOLD_RELATIVE * r_b)
    failed = np.nan_to_num(r_c, nan=0.0) > limit
    if f.kind == "latency":
        _, c, b = hist_series(s)
        p99_c, p99_b = histogram_quantile(0.99, c), histogram_quantile(0.99, b)
        limit_l = np.maximum(THRESHOLD_LATENCY_FLOOR, THRESHOLD_RELATIVE * np.nan_to_num(p99_b, nan=0.0))
        failed |= np.nan_to_num(p99_c, nan=0.0) > limit_l
    return _first_crossing(times, np.cumsum(failed), THRESHOLD_FAILED_POLLS)


def _z_two_sample(x_c: Array, n_c: Array, x_b: Array, n_b: Array) -> Array:
    """One-sided pooled two-proportion z statistic (canary worse) on cumulative counts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x_c + x_b) / (n_c + n_b)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
        z = (x_c / n_c - x_b / n_b) / se
    return np.where(np.isfinite(z), z, 0.0)


def naive(s: Scenario, alpha: float) -> float | None:
    """A fixed-sample test re-run on cumulative counts after every poll."""
    f = s.family
    share = alpha / len(f.checks)
    times, bad_c, tot_c, bad_b, tot_b = ratio_series(s)
    x_c, n_c = np.cumsum(bad_c), np.cumsum(tot_c)
    if f.kind == "slo":
        assert f.objective is not None
        p_values = binom.sf(x_c - 1, n_c, f.objective)
        reject = (p_values < share) & (n_c > 0)
    else:
        assert bad_b is not None and tot_b is not None
        z = _z_two_sample(x_c, n_c, np.cumsum(bad_b), np.cumsum(tot_b))
        reject = z > norm.isf(share)
    if f.kind == "latency":
        _, c, b = hist_series(s)
        edge = BUCKETS.index(f.slow_edge) + 1  # buckets above the edge
        slow_c, slow_b = np.cumsum(c[:, edge:].sum(axis=1)), np.cumsum(b[:, edge:].sum(axis=1))
        z_l = _z_two_sample(slow_c, np.cumsum(c.sum(axis=1)), slow_b, np.cumsum(b.sum(axis=1)))
        reject |= z_l > norm.isf(share)
    return _first_crossing(times, reject.astype(float), 1.0)


METHODS: dict[str, Method] = {"oracle": oracle, "kayenta": kayenta, "threshold": threshold, "naive": naive}
"""The baselines by name, in the order the table shows them (after the engine)."""


def applies(method: str, s_kind: str) -> bool:
    """Whether ``method`` fits a family of kind ``s_kind`` (Kayenta compares against a baseline)."""
    return not (method == "kayenta" and s_kind == "slo")
