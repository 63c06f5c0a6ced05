"""E-processes for counts: the anytime-valid core of every ratio and histogram decision (DESIGN §7).

An e-process E_t is a nonnegative supermartingale under "no regression" with E_0 = 1; Ville's
inequality bounds P(sup_t E_t >= 1/a) <= a, so the watchdog may look after every poll for hours and
still roll back a healthy deploy with probability at most ``a``.

Both tests here are mixtures of likelihood ratios over a fixed grid of alternatives with fixed
weights (see ``SPAN``). For an alternative on the bad side of the null, each per-interval
likelihood ratio has expectation exactly 1 at the boundary of the null and below 1 inside it (its
expectation is linear in the true parameter with the sign of the alternative), so every grid
product is a supermartingale under the whole composite null, and so is their weighted average.

Beside the e-process from the deploy's start, each test keeps:

- a Shiryaev-Roberts e-detector per alternative, R_t = (1 + R_{t-1}) * LR_t: the sum over every
  possible onset of the products since that onset, so that an hour of healthy data cannot bury a
  regression that starts later. R_t - t is a supermartingale from 0, so the weighted mixture of
  the R_t reaches N/a within N polls with probability at most a. (It replaced a CUSUM, the maximum
  over onsets instead of the sum: the sum also counts the onsets next to the true one and decides
  about 8 % sooner on a late regression.);
- a prequential-plug-in confidence sequence for the effect (the bad-rate ratio, or the bad rate
  against the objective), from which the early-pass rule reads an anytime-valid upper bound;
- the conditional score sums of a fixed-horizon test for the end of the bake.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaincinv

# The alternatives the mixture bets on, and their weights. Where a mixture spends its prior sets its
# speed: at an effect it weighs little it pays about log(1/weight) extra evidence. Regressions worth
# rolling back are mostly x1.25 to x5 (the range bench/decisions measures), so fourteen alternatives
# from x1.15 to x6 carry most of the weight, evenly spaced in log(log(ratio)): a small effect needs
# finer steps than a large one, because its likelihood is sharper on the log scale; spaced that way
# the mixture's extra cost is about the same at every effect in the range (close to 1.3x an oracle
# that knows the effect, its best possible). Two light alternatives at x10 and x20 keep a broken
# release's first poll decisive: that much evidence clears even their higher bar at once. A ratio
# check on a quiet service raises the lower end to what its bake could show (see `bake_span`).
SPAN = (1.15, 6.0)
"""The range of ratios that carries the mixture's weight, unless a stream is given its own."""


CHI2_SPREAD = 2.0
"""The variance of a chi-square residual with one degree of freedom over its squared mean: how much
per-interval Pearson residuals scatter when counts are Gaussian around their (scaled) mean."""


def effective_dof(dof: float, spread: float = CHI2_SPREAD) -> float:
    """The degrees of freedom a sum of ``dof`` Pearson residuals is worth when each scatters
    ``spread`` times its squared mean (Satterthwaite: the chi-square with the same relative
    variance, 2 / nu = spread / dof). Heavy tails (rare intervals far out, which a few spikes of
    one version make) leave a sum of many residuals as uncertain as one of a few; never more
    than ``dof``."""
    return dof * min(1.0, CHI2_SPREAD / spread) if spread > 0 else dof


def prior_dispersion(pearson: float, dof: float, *, excess_only: bool, spread: float = CHI2_SPREAD) -> float:
    """The dispersion factor a window before the deploy gives (``dof`` >= 1), at its 75 % upper
    confidence bound: with ``excess_only`` (a measured window) only the part above 1 is raised,
    else the whole factor (see :meth:`CountStream.seed_dispersion`). ``spread``: the window's
    residuals' relative variance (:func:`effective_dof`)."""
    nu = effective_dof(dof, spread)
    raise_by = nu / float(2 * gammaincinv(nu / 2, 0.25))  # chi-square's 75 % bound on a variance
    if excess_only:
        return 1.0 + max(0.0, pearson / dof - 1.0) * raise_by
    return max(1.0, pearson / dof * raise_by)


SPAN_FLOOR_SHARE = 0.5
"""How much of the threshold an effect's expected evidence over the whole bake must reach for the
mixture to bet on it (see :func:`bake_span`)."""
SPAN_TOP_INTERVALS = 3
"""Intervals within which an effect at the span's top is expected to reach the threshold (see
:func:`bake_span`)."""


def pair_evidence_per_event(ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    """The conditional binomial's expected log likelihood ratio at ``ratio`` per baseline event,
    with equal traffic: its KL per event pair times the (1 + r) events. Ratio checks fit their span
    with it, the histogram shift stream (bucket by bucket) its multipliers."""
    share = ratio / (1 + ratio)
    return (1 + ratio) * (share * np.log(2 * share) + (1 - share) * np.log(2 * (1 - share)))


def _evidence_per_event(ratio: float, two_sample: bool) -> float:
    """The expected log likelihood ratio at ``ratio`` per bad event the null expects (increasing in
    ratio > 1): two samples, :func:`pair_evidence_per_event`; one sample, the Poisson KL per
    expected event at the objective."""
    if two_sample:
        return float(pair_evidence_per_event(np.asarray(ratio, dtype=float)))
    return ratio * math.log(ratio) - ratio + 1


def _smallest_ratio(need: float, low: float, high: float, two_sample: bool) -> float:
    """The smallest ratio in [low, high] whose evidence per event reaches ``need`` (bisection in
    log(ratio), to well under 0.1 %); ``high`` when none does."""
    if _evidence_per_event(low, two_sample) >= need:
        return low
    if _evidence_per_event(high, two_sample) < need:
        return high
    below, above = low, high
    for _ in range(50):
        middle = math.sqrt(below * above)
        below, above = (middle, above) if _evidence_per_event(middle, two_sample) < need else (below, middle)
    return above


def bake_span(
    events: float, intervals: int, log_threshold: float, *, two_sample: bool, span: tuple[float, float] = SPAN
) -> tuple[float, float]:
    """``span`` narrowed to the effects whose detection time the mixture's weights decide.

    A mixture pays for every alternative it bets on: at the true effect it is slower by about
    log(1 / the weight near it). Two kinds of bets buy nothing:

    - effects this bake cannot show. One whose expected evidence over the whole bake stays below
      half the threshold is almost never detected sequentially (the end-of-bake test is there for
      it): a service with 0.6 errors per interval cannot show x1.15 in an hour, and betting on it
      costs a third of the mixture's weight. The lower end rises past them;
    - fine distinctions among effects that any bet near them decides within a few polls. Above the
      effect whose expected evidence reaches the threshold within SPAN_TOP_INTERVALS intervals,
      the top alternative's own evidence grows at least as fast as at that effect (in an
      exponential family, a likelihood ratio gains faster the further the truth lies beyond its
      alternative), so larger effects are decided within about as many polls: at 30 errors per
      interval x2 already is, and the weight the span gave x2 to x6 slows x1.25 by a fifth.
      The top comes down to that effect (keeping a factor of two above the lower end), and
      :func:`grid` adds light bets beyond it.

    ``events``: bad events per interval and version, deflated by the dispersion factor, as the
    window before the deploy showed them (two samples: the baseline's; one sample: the traffic
    times the objective). It is an upper bound on what either version of a canary sees, since the
    versions share the service's traffic: the lower end errs toward small effects, the top toward
    large ones stays covered by the light bets. Only data from before the deploy sets the span: the
    weights stay fixed before the test sees a canary interval, as a mixture's must."""
    low, high = span
    if events <= 0 or intervals <= 0:
        return span
    floor_need = SPAN_FLOOR_SHARE * log_threshold / (events * intervals)
    if _evidence_per_event(high, two_sample) >= floor_need:  # else nothing is detectable: keep all
        low = _smallest_ratio(floor_need, low, high, two_sample)
    top_need = log_threshold / (events * min(intervals, SPAN_TOP_INTERVALS))
    top = _smallest_ratio(top_need, low, high, two_sample)
    return low, max(top, 2 * low)


@functools.cache
def _alternatives(
    span: tuple[float, float], limit: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    low, high = span
    core = np.exp(np.exp(np.linspace(math.log(math.log(low)), math.log(math.log(high)), 14)))
    # Light bets beyond the top keep a large effect's first polls decisive: at x10 and x20, and
    # where the span stops well short of them (fitted to a busy service), at 1.6 and 2.6 times it.
    beyond = [high * 1.6, high * 2.6] if high * 2.6 < 10.0 else []
    light = [r for r in (*beyond, 10.0, 20.0) if high * 1.2 < r <= limit]
    weights = np.concatenate([np.ones(14), np.full(len(light), 0.3)])
    return np.concatenate([core, light]), np.log(weights / weights.sum())


# Where the confidence sequence for the effect is evaluated: ratios from 1/50 to 50.
_EFFECTS = np.exp(np.linspace(math.log(1 / 50), math.log(50.0), 241))
_LOG_EFFECTS = np.log(_EFFECTS)
LOG_FLOOR = -700.0
"""Where log e-values stop falling: below it nothing is left to recover from, and exp() underflows."""
_MAX, _SUM = np.maximum.reduce, np.add.reduce
# chi-square 5 % quantiles by degrees of freedom, for the dispersion factor's upper bound
_CHI2_LOW = 2 * gammaincinv(np.arange(1, 1001) / 2, 0.05)
_CHI2_HIGH = 2 * gammaincinv(np.arange(1, 1001) / 2, 0.95)  # and 95 % ones, for the floor
MIN_OWN_DOF, SURE_OWN_DOF = 3, 10
"""Intervals a two-sample stream's own dispersion estimate needs before it may replace the one
from before the deploy, and before it may do so at its 95 % upper bound rather than its 99 %:
the smaller of two noisy estimates is too often too small, the more so the fewer intervals it
rests on (bench/decisions, 6,000 healthy bursty runs: switching at 3 intervals at the 95 % bound
rolled back 48 where waiting for 10 rolled back 29; at the 99 % bound until 10, 31)."""
_CHI2_LOWEST = 2 * gammaincinv(np.arange(1, SURE_OWN_DOF) / 2, 0.01)  # 1 % quantiles, dof 1-9


def chi2_low(dof: float) -> float:
    """The 5 % quantile of a chi-square with ``dof`` degrees of freedom (dof >= 1)."""
    k = int(dof)
    if k <= 1000:
        return float(_CHI2_LOW[k - 1])
    return k - 1.6449 * math.sqrt(2 * k)  # normal approximation, accurate to 0.1 % here


def chi2_high(dof: float) -> float:
    """The 95 % quantile of a chi-square with ``dof`` degrees of freedom (dof >= 1)."""
    k = int(dof)
    if k <= 1000:
        return float(_CHI2_HIGH[k - 1])
    return k + 1.6449 * math.sqrt(2 * k)


def _own_bound_divisor(dof: float, spread: float = CHI2_SPREAD) -> float | None:
    """What a two-sample stream divides its own Pearson sum by to replace the prior dispersion:
    the chi-square's 1 % quantile below SURE_OWN_DOF effective degrees of freedom, its 5 % one
    from there; None below MIN_OWN_DOF (the prior stays). ``spread``: how heavy-tailed the
    window before showed the residuals (:func:`effective_dof`)."""
    nu = effective_dof(dof, spread)
    if nu < MIN_OWN_DOF:
        return None
    if nu == dof:  # the chi-square's own tails: tabulated
        k = int(dof)
        return float(_CHI2_LOWEST[k - 1]) if k < SURE_OWN_DOF else chi2_low(dof)
    return _scaled_quantile(round(nu, 2), dof)


@functools.lru_cache(maxsize=4096)
def _scaled_quantile(nu: float, dof: float) -> float:
    """``dof`` times the relative low quantile of a chi-square with ``nu`` degrees of freedom."""
    level = 0.01 if nu < SURE_OWN_DOF else 0.05
    return dof * float(2 * gammaincinv(nu / 2, level)) / nu


SURGE = 2.0
"""How many times the events of the intervals a dispersion factor was estimated on an interval must
carry (beyond Poisson noise) before the factor's excess grows with them: a surge that hits both
versions, not the ordinary variation of bursty traffic (see :meth:`CountStream.phi_at`)."""
SHARED_SURGES = 2
"""Surges of the bake that hit both versions at once (and outnumber those that hit one) before a
stream trusts its own dispersion estimate as a chi-square's even though the window before showed
heavy tails (see :meth:`CountStream.phi_at`). Two, because spikes of one version coincide now and
then: with each version spiking in one interval of twenty, about one bake in ten has an interval
where both did. bench/decisions (2,000 healthy spike-x2 runs, 500 regressed shock-od-x2): with one,
19 false rollbacks against 11, and shock-od-x2 decided in 16.5 min against 20.5."""
SHARED_ARM = 1.5
"""How many times its typical bad events (at a lower Poisson bound) a version must carry for a
surge to count as hitting it. Bursts on top of a shock leave one version below twice its typical
events often enough that, at 2, shock-od-x2's shocks too often counted as hitting one version and
its power fell to 0.896 (0.910 at 1.5); a spike of one version leaves the other at its typical
events."""
HEAVY_SPREAD = 6.0
"""A window whose residuals spread more than this (see :func:`effective_dof`) is heavy-tailed: a
few intervals far out made its dispersion. Gamma bursts spread 2 + 6/k in theory (3.5 at CV 0.5,
6 at CV 0.8; bench/decisions' od-x2 windows 2.6 at the median, 4.6 at the 90th percentile, 5 % of
them above 6), shocks and spikes 7-40. After such a window, and until the bake has shown its
surges to be shared, a surge interval is only learned from, never judged: one spike of the canary
(x6 its errors) carries evidence that no factor fitted to the whole window covers. A ratio check
against a baseline then also runs the sign test (:mod:`watchdog.analysis.sign`)."""


SPIKE_SHARE = 0.2
"""The largest share of the window's intervals above SHARED_ARM times its typical bad events for
those intervals to count as spikes (rare, each far out) rather than the bulk of a bursty service.
Of the windows spreading beyond HEAVY_SPREAD, 10th to 90th percentile: one version spiking alone
in one interval of ten or twenty (bench/decisions' spike-x2, twin-x1.5), 3-13 % of intervals; with
shocks of both besides, 9-17 %; gamma bursts with CV 1 (od1-x2), 19-28 %. With the skip
(:meth:`CountStream.spike_alone`) od1-x2 catches 387 of 500 regressed deploys, 399 without it;
in an earlier form of the rule (a 1.5x bar), it lost 4 of 300 at this share, 12 at 0.22 and 38
with no share bar at all."""

SPIKE_SPREAD = 5.0
"""How heavy-tailed a window must be for :meth:`CountStream.spike_alone` to look for spikes: less
than HEAVY_SPREAD, since shocks and spikes together leave some windows just under it (with each
version spiking x3-x10 in one interval of twenty beside shocks in one of ten, bench/spike_noise.py
--shocks 0.1 --rps 100 rolled back 2.2 % of healthy deploys at 6, 1.3 % at 5, of 1,000 each).
Lower, more of od-x2's windows pass it, where a doubled canary's bursts look like its spikes until
the effect is learned (at 4, with an earlier form of the rule, 5.0 -> 5.2 min median)."""


def high_share(bad: NDArray[np.float64], total: NDArray[np.float64], rate: float) -> float:
    """The share of intervals whose ``bad`` events, at a lower Poisson bound, exceed SHARED_ARM
    times ``rate`` (a typical interval's) of their ``total``: how often the window ran high."""
    if bad.size == 0 or rate <= 0:
        return 0.0
    low = np.maximum(0.0, np.sqrt(bad) - 1.0) ** 2
    return float(np.mean(low > SHARED_ARM * total * rate))


def _surged(phi: float, weight: float, reference: float | None) -> float:
    """``phi`` for an interval of ``weight`` events, estimated on intervals of ``reference`` events
    on average: the excess over 1 grows with the weight beyond SURGE times the reference (from
    where it is unchanged, so the factor is continuous in the weight) and never shrinks."""
    if not reference or math.isinf(phi) or weight <= SURGE * reference:
        return phi
    return 1.0 + (phi - 1.0) * (weight / reference - SURGE + 1.0)


def _split_weight(bad: float, total_c: float, total_b: float) -> float:
    """One version's bad events' worth of an interval's ``bad`` events in the canary's share:
    2*theta0*(1 - theta0)*bad, which is bad/2 with the traffic split evenly."""
    theta0 = total_c / (total_c + total_b) if total_c + total_b > 0 else 0.5
    return 2.0 * theta0 * (1.0 - theta0) * bad


def _surge_weight(bad: float, total_c: float, total_b: float, effect: float) -> float:
    """The weight :meth:`CountStream.phi_at` judges a two-sample interval's ``bad`` events with:
    the events the null would have brought (a regression adds its own, by ``effect``, the ratio
    estimated from past intervals; never more than observed), at a lower Poisson bound of about one
    standard deviation, (sqrt(x) - 1)^2, so that a quiet service's chance pair of errors is no
    surge. It depends on the interval's total bad events and the past only, which the test
    conditions on: never on how the events split between the versions."""
    theta0 = total_c / (total_c + total_b)
    null_bad = bad / (1.0 + theta0 * (max(1.0, effect) - 1.0))
    return _split_weight(_poisson_low(null_bad), total_c, total_b)


def _poisson_low(count: float) -> float:
    """A lower bound of about one standard deviation on the mean behind a Poisson ``count``."""
    return max(0.0, math.sqrt(count) - 1.0) ** 2


def _finite_population(bad: float, total: float) -> float:
    """How much less the canary's share of ``bad`` events varies, given both versions' totals, than
    a binomial share would: the hypergeometric's (N - K) / (N - 1), floored at one half."""
    if total <= 1:
        return 1.0
    return max(0.5, min(1.0, (total - bad) / (total - 1)))


def evidence(size: int) -> NDArray[np.float64]:
    """A fresh (2, size) array: row 0 the log products since the start (0), row 1 the log
    Shiryaev-Roberts statistics (R_0 = 0). One array, so that a poll updates both in four vector
    operations instead of six; streams keep their rows as ``log_e`` and ``log_sr`` views."""
    both = np.zeros((2, size))
    both[1] = LOG_FLOOR
    return both


def accumulate(both: NDArray[np.float64], log_lr: NDArray[np.float64]) -> None:
    """One interval's log likelihood ratios, per alternative, into the products since the start
    (row 0 of :func:`evidence`'s array) and the Shiryaev-Roberts statistics
    R_t = (1 + R_{t-1}) * LR_t (row 1), in place."""
    sr = both[1]
    np.logaddexp(sr, 0.0, out=sr)
    both += log_lr
    np.maximum(both, LOG_FLOOR, out=both)


def grid(
    direction: str, span: tuple[float, float] = SPAN, limit: float = math.inf
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The alternative ratios for a direction and the log of their weights (summing to 1); the
    light ones beyond ``span`` only up to ``limit``."""
    worse, log_weights = _alternatives(span, limit)
    if direction == "increase":
        return worse.copy(), log_weights.copy()
    if direction == "decrease":
        return 1.0 / worse, log_weights.copy()
    return np.concatenate([1.0 / worse, worse]), np.concatenate([log_weights, log_weights]) - math.log(2)


def log_mix(values: NDArray[np.float64], log_weights: NDArray[np.float64]) -> float:
    """log(sum(weights * exp(values))) without overflow; scipy's logsumexp costs ten times more on
    the small vectors used here, and this runs once per check per poll."""
    shifted = values + log_weights
    top = float(_MAX(shifted))
    return top + math.log(float(_SUM(np.exp(shifted - top))))


class CountStream:
    """One stream of per-interval counts and everything the engine computes from it.

    Two-sample (``objective is None``): canary against a concurrent baseline. Conditional on an
    interval's bad events x = x_c + x_b, the canary's share is Binomial(x, theta(rho)) with
    theta(rho) = rho*n_c / (rho*n_c + n_b), rho the ratio of bad rates, theta(1) under the null.
    Conditioning on each interval's totals makes a changing traffic split harmless, and it cancels
    whatever shared shock hits both arms in that interval.

    One-sample (``objective`` set): bad ~ Binomial(total, p) with the null p <= objective, mixed
    over p = objective * r on the grid of ratios r (capped below 1).

    Counts are divided by the dispersion factor ``phi`` before they enter any statistic (a
    quasi-likelihood): bursty errors carry less information than independent ones, and treating
    them as independent turns bursts into false rollbacks. ``phi`` is estimated from past intervals
    only (see :meth:`update`), so it is predictable.
    """

    def __init__(
        self,
        direction: str = "increase",
        objective: float | None = None,
        *,
        dispersion: bool = True,
        span: tuple[float, float] = SPAN,
        limit: float = math.inf,
    ) -> None:
        """``dispersion=False`` treats counts as exactly binomial (for tests of the closed forms);
        ``span`` moves the mixture's weight (see :data:`SPAN`), and no alternative beyond it
        exceeds ``limit``."""
        if objective is not None and not 0 < objective < 1:
            raise ValueError("objective must lie strictly between 0 and 1")
        self.direction = direction
        self.objective = objective
        self.dispersion = dispersion
        ratios, log_weights = grid(direction, span, limit)
        if objective is None:
            self.alt = ratios
            self._log_alt = np.log(ratios)
            self._alt_less_1 = ratios - 1.0
        else:
            p = np.clip(objective * ratios, 1e-12, 1 - 1e-9)
            keep = p != objective  # (only clipping can make one equal) a null alternative bets nothing
            kept = log_weights[keep]
            self.alt, log_weights = p[keep], kept - math.log(float(np.exp(kept).sum()))
            # per-event log-likelihood ratios of each alternative: bad events, good events
            self._bad_lr = np.log(self.alt / objective)
            self._good_lr = np.log1p(-self.alt) - math.log1p(-objective)
            p_grid = np.clip(objective * _EFFECTS, 1e-12, 1 - 1e-9)
            self._log_p_grid, self._log_q_grid = np.log(p_grid), np.log1p(-p_grid)
        self._log_weights = log_weights
        self._evidence = evidence(self.alt.size)
        self.log_e = self._evidence[0]  # mixture components since the start (a view: never rebind)
        # Shiryaev-Roberts per alternative: R_t = (1 + R_{t-1}) * LR_t, from R_0 = 0
        self.log_sr = self._evidence[1]
        # The confidence sequence's prequential log-likelihood ratios, per effect value, are summed
        # from per-interval terms only when read (see `cs`): replay reads them once per recording.
        self._cs_base = np.zeros_like(_EFFECTS)
        self._cs_terms: list[tuple[float, float, float, float]] = []
        # Scalars stay Python floats: numpy costs more than it saves on four numbers.
        self.counts = [0.0, 0.0, 0.0, 0.0]  # raw bad_c, total_c, bad_b, total_b
        self.score = [0.0, 0.0]  # deflated score sum and its variance (fixed-horizon test)
        self.disp = [0.0, 0.0]  # Pearson sum and degrees of freedom (dispersion)
        self.own_weight = 0.0  # the events behind the Pearson sum's intervals (see `phi_at`)
        self.prior_phi: float | None = None  # dispersion before the deploy, if known
        self.prior_weight: float | None = None  # events per interval behind it, if measured
        self.prior_spread = CHI2_SPREAD  # how heavy-tailed its residuals were (see effective_dof)
        self.prior_rate: float | None = None  # its typical bad events per request (the median's)
        self.prior_high: float | None = None  # the share of its intervals that ran high (high_share)
        self.surges = [0, 0]  # surges of the bake that hit both versions, and that hit one
        self._split_intervals = 0
        self.intervals = 0

    # -- feeding -----------------------------------------------------------------------------------

    @property
    def phi(self) -> float:
        """The dispersion factor the next interval is judged with; never below 1.

        Two estimates, each an upper bound in its way, and the smaller wins:

        - the stream's own: Pearson's X^2 of past intervals (for two samples, of the canary's share
          around the fitted effect, which is what the conditional test sees), raised to its 95 %
          upper confidence bound. It needs no history, and it starts out very conservative: the
          first interval is only observed, the next few count little;
        - the window before the deploy (one arm over time): a good estimate from the first poll,
          but it also counts shocks that hit both versions at once, which the two-sample test
          cancels (a service whose errors jump x3-x10 in one interval of ten shows a factor near
          60 there, where the test needs about 1), so for two samples the stream's own estimate
          takes over once it rests on MIN_OWN_DOF intervals and is lower, judged at its 99 %
          bound until it rests on SURE_OWN_DOF.

        Both bounds count intervals at what they are worth (:func:`effective_dof`). Where the
        window before showed heavy tails, a few intervals far out rather than many a little
        out, a few spike-free intervals of the bake say little: each version's errors spiking
        x2-x6 in one interval of twenty rolled back 16.65 % of bench/decisions' spike-x2 healthy
        deploys (333 of 2,000) when the own estimate took over as a chi-square's after three of
        them, and 1.05 % counted so; 0.55 % when, after such a window (see HEAVY_SPREAD), a surge
        interval is only learned from. Shared shocks make the same tails, and for them the own
        estimate is right: once the bake has shown SHARED_SURGES surges that hit both versions
        (and more of those than surges that hit one), it is counted as a chi-square's again
        (:attr:`tail_spread`).

        And for two samples the factor is never below the stream's own estimate at its 95 % lower
        bound: an hour without a spike says nothing of the spike it did not see, and when the
        canary's share varies more than the window said, the window was wrong. With each
        version spiking x3-x10 in one interval of thirty-three, one window in forty shows no
        spike at all; judged by the window alone, 37 of 2,000 such healthy deploys were rolled
        back, 22 with the floor (an ad-hoc variant of spike-x2).
        """
        return self.phi_at(0.0)

    def phi_at(self, weight: float) -> float:
        """:attr:`phi` for an interval of volume ``weight`` (two samples: its bad events, see
        :func:`_surge_weight`, one version's when the traffic is split evenly; one sample: its
        requests, at a lower Poisson bound). Where an interval carries more than SURGE times the
        volume of the intervals an estimate came from, that estimate's excess over 1 grows with
        it; it never shrinks.

        One sample: bursts grow with the traffic they burst on, and an SLO check judged a traffic
        surge (x3-x10 the requests, one interval in ten; gamma bursts, CV 0.5, 30 errors per
        ordinary interval) with the factor of ordinary intervals: 12.0 % of healthy deploys
        rolled back (bench/slo_surges.py, 1,000 runs), 0.8 % with it.

        Bursts of one version scale with its error volume (a gamma-Poisson's variance is
        mu + mu^2/k: the canary's share varies 1 + mu/k times as much as a binomial's), so a surge
        that hits both versions at once (a shared dependency failing) multiplies their bursts
        too. The conditional test cancels the surge but not those bursts: judged with the factor
        of ordinary intervals, they rolled back 6.0 % of healthy deploys of bench/decisions'
        shock-od-x2 (120 of 2,000; shocks x3-x10 in one interval of ten on top of bursts with
        CV 0.5), and 0.05 % with it. Below the surge the factor stays: where errors cluster per event
        (retries), the factor does not fall with the volume; and ordinary variation of bursty
        traffic would only slow decisions (od-x2: 1.38x the oracle's delay with the excess
        scaled from 1.5 times the reference, 1.25x from twice)."""
        if not self.dispersion:
            return 1.0
        pearson, dof = self.disp
        own_weight = self.own_weight / dof if dof >= 1 else None
        prior = self.prior_phi
        if prior is None:
            return _surged(max(1.0, pearson / chi2_low(dof)), weight, own_weight) if dof >= 1 else math.inf
        spread = self.tail_spread
        surge = self.prior_weight is not None and weight > SURGE * self.prior_weight
        if surge and self.objective is None and spread > HEAVY_SPREAD:
            return math.inf  # a surge after a heavy-tailed window: learned from, not judged
        prior = _surged(prior, weight, self.prior_weight)
        if self.objective is not None:
            # one sample: the window before is the very quantity (the rate's variation over time)
            return prior
        # never below what the bake itself shows, at its 95 % lower bound
        floor = _surged(pearson / chi2_high(dof), weight, own_weight) if dof >= 1 else 1.0
        divisor = _own_bound_divisor(dof, spread) if dof >= MIN_OWN_DOF else None
        if divisor is not None:
            prior = min(_surged(max(1.0, pearson / divisor), weight, own_weight), prior)
        return max(prior, floor)

    @property
    def tail_spread(self) -> float:
        """How heavy-tailed the residuals are taken to be: as the window before showed them, until
        the bake has shown SHARED_SURGES surges that hit both versions, and more of those than
        surges that hit one; then as a chi-square's (shared shocks are what the test cancels)."""
        shared, lopsided = self.surges
        return CHI2_SPREAD if shared >= SHARED_SURGES and shared > lopsided else self.prior_spread

    def interval_phi(self, bad: float, total_c: float, total_b: float, effect: float | None = None) -> float:
        """The factor a two-sample interval with ``bad`` events of both versions on these
        totals is judged with (:meth:`phi_at` at :func:`_surge_weight`), before the stream learns
        from it; ``effect`` defaults to the estimate from the intervals so far."""
        if total_c <= 0 or total_b <= 0:
            return self.phi
        effect = self.effect_estimate() if effect is None else effect
        return self.phi_at(_surge_weight(bad, total_c, total_b, effect))

    def spike_alone(
        self, bad_c: float, total_c: float, bad_b: float, total_b: float, effect: float | None = None
    ) -> bool:
        """Whether this two-sample interval is one version spiking, after a window that showed
        rare spikes: the window spread beyond SPIKE_SPREAD with at most SPIKE_SHARE of its
        intervals high (:func:`high_share`), and now, at a lower Poisson bound, exactly one
        version carries more than SURGE times the window's typical bad events, or both do (a
        shock) and one more than SURGE times the other's rate (a spike on top of it). The
        canary's counts are taken over the effect estimated so far, so that a regression the
        stream has already seen does not count; and the bar is SURGE, not SHARED_ARM, so that a
        doubling the stream has not learned yet is still judged (at 1.5, od-x2's regressed
        deploys were decided 0.5 min later at the median, 5.5 min against 5.0).

        Such an interval is learned from, not judged (:meth:`update`), even once the bake has
        shown surges that hit both versions (:attr:`tail_spread`): a service can have both,
        shocks of a shared dependency and spikes of one version, and one version's history
        cannot tell how many of each. bench/spike_noise.py --shocks 0.1 (shocks x3-x10 in one
        interval of ten beside each version's spikes) rolled back 10-22 % of healthy deploys at
        100 req/s judging them (300 each), 0.6-1.6 % not (1,000 each).

        Whether an interval is skipped depends on how its events split, which the test
        otherwise never looks at. It stays an e-process: the skipped splits are both tails (one
        version far above its typical events or the other's, or the other far above), symmetric
        in the versions, and a likelihood ratio convex in the canary's count has no larger
        expectation on the middle of a symmetric distribution than on all of it.

        ``effect`` defaults to the estimate from the intervals so far; a caller that has already
        added this interval's counts passes the one from before."""
        rate, high = self.prior_rate, self.prior_high
        if not rate or high is None or high > SPIKE_SHARE or self.prior_spread <= SPIKE_SPREAD:
            return False
        if total_c <= 0 or total_b <= 0:
            return False
        effect = max(1.0, self.effect_estimate() if effect is None else effect)
        low_c, low_b = _poisson_low(bad_c) / (total_c * effect), _poisson_low(bad_b) / total_b
        up_c, up_b = low_c > SURGE * rate, low_b > SURGE * rate
        # or both, but one far above the other: a spike on top of a shock
        apart = low_c > SURGE * bad_b / total_b or low_b > SURGE * bad_c / (total_c * effect)
        return up_c != up_b or (up_c and apart)

    def seed_dispersion(
        self,
        pearson: float,
        dof: float,
        *,
        measured: bool = True,
        events: float | None = None,
        requests: float | None = None,
        spread: float = CHI2_SPREAD,
        typical_rate: float | None = None,
        high: float | None = None,
    ) -> None:
        """The dispersion seen before the deploy (data the test does not use), so the first polls
        are already judged with it, at its 75 % upper confidence bound: an hour of intervals is no
        certainty, and a draw on the low side turns bursts into false rollbacks.

        Only the excess over 1 is uncertain: the 1 is the binomial's own variance, known exactly,
        and the excess is what bursts add and the window measures. So a measured window has only
        its excess raised: a service without bursts keeps a factor near 1 (no count varies less
        than a binomial), where raising the whole factor slowed every decision by the bound's
        margin (about 15 %), and a bursty one is still covered. bench/decisions, 8,000 healthy
        runs each: gamma bursts with CV 0.5 on independent versions were rolled back 0.92 % of
        the time with the two-sample point estimate and 0.53 % with the raised excess; against an
        SLO, 0.68 % (the whole factor raised: 0.56 %, and 10 % slower without bursts).

        Two samples could take less: the window also counts what moves both versions at once
        (traffic mix, shared shocks), which the conditional test cancels. But it cannot tell those
        from bursts of one version, which the test does not cancel.

        ``measured=False``: an assumed window (no history yet), whose whole factor is raised.
        ``events``, ``requests``: bad events and requests per interval in the window (one
        version's), the volume :meth:`phi_at` measures a surge against (events for two samples,
        requests for one); without it the factor is the same for every interval. ``spread``: how
        heavy-tailed the window's residuals were (see :func:`effective_dof`); the bound uses the
        degrees of freedom they are worth. ``typical_rate``: bad events per request in a typical
        interval of the window, against which a surge's versions count as hit or not. ``high``:
        the share of the window's intervals that ran high against it (:func:`high_share`)."""
        if dof >= 1:
            self.prior_phi = prior_dispersion(pearson, dof, excess_only=measured, spread=spread)
            self.prior_spread = max(CHI2_SPREAD, spread)
            self.prior_rate = typical_rate
            self.prior_high = high
            volume = events if self.objective is None else requests
            self.prior_weight = volume if volume is not None and volume > 0 else None

    def update(
        self,
        bad_c: float,
        total_c: float,
        bad_b: float = 0.0,
        total_b: float = 0.0,
        *,
        phi: float | None = None,
    ) -> None:
        """Feed one interval. Intervals without events say nothing and are skipped. ``phi``: the
        factor :meth:`interval_phi` gave this interval, when the caller needed it first (a
        histogram's shift stream judges a poll with its edges' largest); else computed here."""
        predicted = self.effect_estimate()
        counts = self.counts
        counts[0] += bad_c
        counts[1] += total_c
        counts[2] += bad_b
        counts[3] += total_b
        # The dispersion factor comes from past intervals only, like the effect the confidence
        # sequence predicts with, scaled by this interval's volume, which the test conditions on
        # (see `phi_at`): two samples' bad events, one sample's requests.
        if self.objective is None:
            if total_c > 0 and total_b > 0:
                weight = _surge_weight(bad_c + bad_b, total_c, total_b, predicted)
                if phi is None:
                    alone = self.spike_alone(bad_c, total_c, bad_b, total_b, predicted)
                    phi = math.inf if alone else self.phi_at(weight)
                self._count_surge(bad_c, total_c, bad_b, total_b, weight)
            elif phi is None:
                phi = self.phi
            self._update_two_sample(bad_c, total_c, bad_b, total_b, phi, predicted)
        else:
            phi = self.phi_at(_poisson_low(total_c))
            self._update_one_sample(bad_c, total_c, phi, predicted * self.objective)

    def _count_surge(self, bad_c: float, total_c: float, bad_b: float, total_b: float, weight: float) -> None:
        """Count this interval if it was a surge (its :func:`_surge_weight` beyond SURGE times the
        window's events): as one that hit both versions (each carrying, at a lower Poisson bound,
        more than SHARED_ARM times its typical events) or one. A shared dependency failing does the
        first, one version's pod restarting the second; only the bake can tell them apart, and
        only from the split of past intervals, so the count is predictable for the next one."""
        rate, reference = self.prior_rate, self.prior_weight
        if not rate or not reference or weight <= SURGE * reference:
            return
        up_c = _poisson_low(bad_c) > SHARED_ARM * total_c * rate
        up_b = _poisson_low(bad_b) > SHARED_ARM * total_b * rate
        if up_c and up_b:
            self.surges[0] += 1
        elif up_c or up_b:
            self.surges[1] += 1

    def _update_two_sample(
        self, bad_c: float, total_c: float, bad_b: float, total_b: float, phi: float, rho_hat: float
    ) -> None:
        if total_c <= 0 or total_b <= 0 or bad_c + bad_b <= 0:
            return
        self.intervals += 1
        # Given both versions' totals, the canary's share of the bad events is hypergeometric, not
        # binomial: its variance is smaller by the finite-population factor, which matters once bad
        # events are no longer rare (a histogram edge near the median). Counting each event as
        # 1/factor of one recovers that information; the floor keeps the approximation honest.
        factor = _finite_population(bad_c + bad_b, total_c + total_b) if self.dispersion else 1.0
        if math.isinf(phi):  # no dispersion estimate yet: this interval only teaches one
            self._learn_split(bad_c, bad_b, total_c, total_b, factor)
            return
        scale = phi * factor
        x_c, x_b = bad_c / scale, bad_b / scale
        x = x_c + x_b
        theta0 = total_c / (total_c + total_b)
        # With theta(r) = r*c / (r*c + b): x_c*log(theta(r)/theta0) + x_b*log((1-theta(r))/(1-theta0))
        # = x_c*log(r) - x*log((r*c + b) / (c + b)) = x_c*log(r) - x*log1p((r - 1)*theta0): one
        # vector logarithm per update.
        self._accumulate(x_c * self._log_alt - x * np.log1p(self._alt_less_1 * theta0))
        # confidence sequence: predict with the effect estimated from past intervals
        theta_hat = rho_hat * total_c / (rho_hat * total_c + total_b)
        predicted = x_c * math.log(theta_hat) + x_b * math.log1p(-theta_hat)
        fixed = predicted - x_c * math.log(total_c) - x_b * math.log(total_b) + x * math.log(total_c)
        self._cs_terms.append((fixed, x_c, x, total_b / total_c))
        # fixed-horizon score test and the split's dispersion around the fitted effect
        self.score[0] += x_c - x * theta0
        self.score[1] += x * theta0 * (1 - theta0)
        self._learn_split(bad_c, bad_b, total_c, total_b, factor)

    def _learn_split(self, bad_c: float, bad_b: float, total_c: float, total_b: float, factor: float) -> None:
        """This interval's Pearson residual of the canary's share around the effect fitted to all
        intervals so far, this one included (the estimate from before it may be far off on the
        first intervals of a large regression, and that would read as dispersion), against the
        variance the test assumes (``factor``: the finite-population one). Fitting the effect
        costs a degree of freedom: the first interval adds none.

        In that fit this interval weighs no more than a typical one (its events scaled down to the
        mean of the intervals before it). A surge interval carries many times the events of the
        others, and fitted at full weight it pulls the effect to its own share, leaving itself
        no residual: on a healthy deploy whose latencies wobble per version (x exp(N(0, 0.1))
        per interval) and surge on both (x2-x4, one interval in ten), one surge's lopsided share
        of slow requests set the effect near x3 and hid the dispersion that made it, and the next
        surge rolled the deploy back: 14 of 1,000 at 200 req/s against 2 of 1,000 with the
        weight capped (the histogram check's alpha: 0.5 %)."""
        n = bad_c + bad_b
        if n < 1:
            return
        self._split_intervals += 1
        if self._split_intervals == 1:
            return
        bad_before_c, total_before_c = self.counts[0] - bad_c, self.counts[1] - total_c
        bad_before_b, total_before_b = self.counts[2] - bad_b, self.counts[3] - total_b
        typical = (bad_before_c + bad_before_b) / (self._split_intervals - 1)
        weight = min(1.0, typical / n)
        fit_c, fit_b = total_before_c + weight * total_c, total_before_b + weight * total_b
        rho_now = 1.0
        if fit_c > 0 < fit_b:
            rate_c = (bad_before_c + weight * bad_c + 0.5) / fit_c
            rho_now = rate_c / ((bad_before_b + weight * bad_b + 0.5) / fit_b)
        fitted = rho_now * total_c / (rho_now * total_c + total_b)
        self.disp[0] += (bad_c - n * fitted) ** 2 / (n * fitted * (1 - fitted) * factor)
        self.disp[1] += 1.0
        self.own_weight += _split_weight(n, total_c, total_b)

    def _update_one_sample(self, bad: float, total: float, phi: float, predicted_rate: float) -> None:
        if total <= 0:
            return
        self.intervals += 1
        assert self.objective is not None
        if math.isinf(phi):  # no dispersion estimate yet: this interval only teaches one
            self._learn_rate(bad, total)
            return
        p0 = self.objective
        x, n = bad / phi, total / phi
        good = max(0.0, n - x)
        self._accumulate(x * self._bad_lr + good * self._good_lr)
        p_hat = min(max(predicted_rate, 1e-9), 1 - 1e-9)
        predicted = x * math.log(p_hat) + good * math.log1p(-p_hat)
        self._cs_terms.append((predicted, x, good, 0.0))
        self.score[0] += x - n * p0
        self.score[1] += n * p0 * (1 - p0)
        self._learn_rate(bad, total)

    def _learn_rate(self, bad: float, total: float) -> None:
        """This interval's Pearson residual around the rate of the intervals before it (around a
        rate that included it, the first residual would be zero by construction)."""
        before_bad, before_total = self.counts[0] - bad, self.counts[1] - total
        if before_total <= 0:
            return
        rate = before_bad / before_total
        if 0 < rate < 1:
            self.disp[0] += (bad - total * rate) ** 2 / (total * rate * (1 - rate))
            self.disp[1] += 1.0
            self.own_weight += total

    @property
    def cs(self) -> NDArray[np.float64]:
        """Per effect value, the log of the prequential e-process against it (a value is in the
        confidence sequence while this stays below log(1/alpha))."""
        if self._cs_terms:
            terms = np.asarray(self._cs_terms)
            first, a, b, ratio = terms[:, 0:1], terms[:, 1:2], terms[:, 2:3], terms[:, 3:4]
            if self.objective is None:
                # x*log(e*c + b) = x*log(c) + x*log(e + b/c); the x*log(c) parts are in `first`
                block = first - a * _LOG_EFFECTS + b * np.log(_EFFECTS + ratio)
            else:
                block = first - a * self._log_p_grid - b * self._log_q_grid
            self._cs_base = self._cs_base + block.sum(axis=0)
            self._cs_terms = []
        return self._cs_base

    def _accumulate(self, log_lr: NDArray[np.float64]) -> None:
        accumulate(self._evidence, log_lr)

    def crossed(self, log_threshold: float, log_detector_threshold: float) -> str | None:
        """Which test crossed its threshold, if any. The maximum of a mixture's components bounds
        its mean from above, so the exact mixtures are computed only when a crossing is possible."""
        # ufunc reductions called directly: ndarray.max() adds a Python wrapper that costs more
        # than the 24-element reduction itself, at every poll of every check
        if float(_MAX(self.log_e)) >= log_threshold and self.log_e_value >= log_threshold:
            return "sequential"
        if (
            float(_MAX(self.log_sr)) >= log_detector_threshold
            and self.log_detector >= log_detector_threshold
        ):
            return "late-onset detector"
        return None

    # -- reading -----------------------------------------------------------------------------------

    @property
    def log_e_value(self) -> float:
        return log_mix(self.log_e, self._log_weights)

    @property
    def e_value(self) -> float:
        return math.exp(min(700.0, self.log_e_value))

    @property
    def log_detector(self) -> float:
        """The late-onset e-detector (Shiryaev-Roberts mixture), to compare with log(N/a)."""
        return log_mix(self.log_sr, self._log_weights)

    def rate_estimate(self) -> float:
        """The canary's bad rate, smoothed so that an empty start predicts half an event."""
        bad_c, total_c = self.counts[0], self.counts[1]
        return float((bad_c + 0.5) / (total_c + 1.0))

    def effect_estimate(self) -> float:
        """Two-sample: the ratio of bad rates (smoothed); one-sample: the rate over the objective."""
        bad_c, total_c, bad_b, total_b = self.counts
        if self.objective is not None:
            return self.rate_estimate() / self.objective
        if total_c <= 0 or total_b <= 0:
            return 1.0
        return float(((bad_c + 0.5) / total_c) / ((bad_b + 0.5) / total_b))

    def confidence_interval(self, alpha: float) -> tuple[float, float]:
        """An anytime-valid (1 - alpha) interval for the effect, clipped to [1/50, 50]."""
        inside = _EFFECTS[self.cs < math.log(1.0 / alpha)]
        if inside.size == 0:  # the estimate moved faster than the grid: report the point
            point = self.effect_estimate()
            return point, point
        return float(inside[0]), float(inside[-1])

    def end_z(self) -> float:
        """The fixed-horizon score statistic on all intervals, signed so that positive is worse."""
        score, variance = self.score
        if variance <= 0:
            return 0.0
        z = float(score / math.sqrt(variance))
        return -z if self.direction == "decrease" else (abs(z) if self.direction == "both" else z)

    # -- persistence -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "log_e": self.log_e.tolist(),
            "log_sr": self.log_sr.tolist(),
            "cs": self.cs.tolist(),
            "counts": list(self.counts),
            "score": list(self.score),
            "disp": list(self.disp),
            "prior_phi": self.prior_phi,
            "own_weight": self.own_weight,
            "prior_weight": self.prior_weight,
            "prior_spread": self.prior_spread,
            "prior_rate": self.prior_rate,
            "prior_high": self.prior_high,
            "surges": list(self.surges),
            "split_intervals": self._split_intervals,
            "intervals": self.intervals,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        # A state saved before the detector became Shiryaev-Roberts holds CUSUM maxima, which are
        # below the SR sums: resuming from them only makes the detector more cautious.
        for name, saved in (("log_e", "log_e"), ("log_sr", "log_sr"), ("log_sr", "log_cusum")):
            values = np.asarray(state.get(saved, []), dtype=float)
            if saved in state and values.shape == getattr(self, name).shape:
                getattr(self, name)[:] = values
        for name in ("counts", "score", "disp"):
            saved = state.get(name, [])
            if isinstance(saved, list) and len(saved) == len(getattr(self, name)):
                setattr(self, name, [float(v) for v in saved])
        cs = np.asarray(state.get("cs", []), dtype=float)
        if cs.shape == _EFFECTS.shape:
            self._cs_base, self._cs_terms = cs, []
        self.intervals = int(state.get("intervals", 0))
        self._split_intervals = int(state.get("split_intervals", 0))
        prior = state.get("prior_phi")
        self.prior_phi = float(prior) if prior is not None else None
        # A state saved before the factor followed the volume has no weights: every interval then
        # keeps the factor, as it did.
        weight = state.get("prior_weight")
        self.prior_weight = float(weight) if weight is not None else None
        self.own_weight = float(state.get("own_weight", 0.0))
        # A state saved before the window's tails were measured judges its own estimate as a
        # chi-square's, as it did.
        self.prior_spread = float(state.get("prior_spread", CHI2_SPREAD))
        rate = state.get("prior_rate")
        self.prior_rate = float(rate) if rate is not None else None
        # A state saved before spikes of one version were told from the bulk judges them as it did.
        high = state.get("prior_high")
        self.prior_high = float(high) if high is not None else None
        surges = state.get("surges", [0, 0])
        if isinstance(surges, list) and len(surges) == 2:
            self.surges = [int(v) for v in surges]
