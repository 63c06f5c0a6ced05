"""The histogram shift stream (issue 3): its predicted bucket ratios, its closed form, its validity
under the null on small seeded simulations, and what it adds to a histogram check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import rel_entr

from watchdog.analysis import HistogramCheck
from watchdog.analysis.checks import RatioCounts, dispersion_sum
from watchdog.analysis.eprocess import SPAN_TOP_INTERVALS, CountStream
from watchdog.analysis.shift import (
    RATIO_CAP,
    SCALE_SPAN,
    SCALES,
    ShiftStream,
    predicted_ratios,
    scale_dispersion,
    scale_grid,
    scale_span,
)
from watchdog.config.models import CheckConfig

BOUNDS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


def lognormal_probs(median: float, sigma: float = 0.7) -> np.ndarray:
    cdf = stats.norm.cdf((np.log(BOUNDS) - math.log(median)) / sigma)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def cumulative(counts: np.ndarray) -> dict[float, float]:
    cum = np.cumsum(counts)
    out = {b: float(v) for b, v in zip(BOUNDS, cum[:-1], strict=True)}
    out[math.inf] = float(cum[-1])
    return out


def reference(rng: np.random.Generator, median: float = 0.08, n: int = 9000) -> ShiftStream:
    ref = cumulative(rng.multinomial(n, lognormal_probs(median)))
    return ShiftStream(BOUNDS, [ref[b] for b in BOUNDS] + [ref[math.inf]])


def test_predicted_ratios_match_a_lognormal_that_got_slower() -> None:
    """From a lognormal's exact bucket shares, the buckets where requests are common get the true
    ratio of a 10 % and a 50 % slowdown within 1 %."""
    base = lognormal_probs(0.08)
    cum = [*(np.cumsum(base)[:-1] * 1e6), 1e6]
    ratios = predicted_ratios(BOUNDS, cum, np.array([1.1, 1.5]))
    for row, scale in zip(ratios, (1.1, 1.5), strict=True):
        truth = lognormal_probs(0.08 * scale) / base
        assert np.allclose(row[:5], truth[:5], rtol=0.01)


def test_each_scale_is_the_product_of_binomial_likelihood_ratios_per_bucket() -> None:
    """One component's log e-value after two intervals equals the sum over buckets of scipy's
    binomial log-pmf ratios of the canary's share, at the predicted and the null share."""
    rng = np.random.default_rng(31)
    stream = reference(rng)
    rows = [(rng.multinomial(150, lognormal_probs(0.09)), rng.multinomial(160, lognormal_probs(0.08)))]
    rows.append((rng.multinomial(140, lognormal_probs(0.09)), rng.multinomial(150, lognormal_probs(0.08))))
    for c, b in rows:
        stream.update(cumulative(c), cumulative(b), 1.0)
    rho = np.clip(predicted_ratios(BOUNDS, stream.reference, SCALES), 1 / RATIO_CAP, RATIO_CAP)
    k = 5
    expected = 0.0
    for c, b in rows:
        theta0 = c.sum() / (c.sum() + b.sum())
        theta = rho[k] * theta0 / (rho[k] * theta0 + 1 - theta0)
        x = c + b
        expected += float(np.sum(stats.binom.logpmf(c, x, theta) - stats.binom.logpmf(c, x, theta0)))
    assert math.isclose(stream.log_e[k], expected, rel_tol=1e-9, abs_tol=1e-9)


def run(rng: np.random.Generator, canary_median: float, polls: int = 60) -> int | None:
    stream = reference(rng)
    canary = rng.multinomial(rng.poisson(150, polls), lognormal_probs(canary_median))
    baseline = rng.multinomial(rng.poisson(150, polls), lognormal_probs(0.08))
    for t, (c, b) in enumerate(zip(canary, baseline, strict=True)):
        stream.update(cumulative(c), cumulative(b), 1.0)
        if stream.log_e_value >= math.log(1 / 0.05):
            return t + 1
    return None


def test_false_alarms_stay_under_alpha_when_the_canary_is_the_same_or_faster() -> None:
    """200 seeded runs of 60 polls each: the same distribution crosses 1/0.05 at most 5 % of the
    time (within the binomial bound), a 20 % faster canary never more often."""
    rng = np.random.default_rng(32)
    runs = 200
    same = sum(run(rng, 0.08) is not None for _ in range(runs))
    faster = sum(run(rng, 0.064) is not None for _ in range(runs))
    assert same <= stats.binom.ppf(0.99, runs, 0.05)
    assert faster <= same


def test_a_ten_percent_slowdown_is_seen_sooner_than_by_the_best_single_edge() -> None:
    """Every request 10 % slower at 150 requests per poll: the shift stream crosses 1/0.01 at a
    median poll well before the median edge's own ratio test (the most informative edge)."""
    rng = np.random.default_rng(33)
    shift_polls, edge_polls = [], []
    for _ in range(25):
        stream = reference(rng)
        edge = CountStream()
        edge.seed_dispersion(59.0, 59.0)
        shift_at = edge_at = 120
        for t in range(120):
            c = rng.multinomial(rng.poisson(150), lognormal_probs(0.088))
            b = rng.multinomial(rng.poisson(150), lognormal_probs(0.08))
            stream.update(cumulative(c), cumulative(b), 1.0)
            edge.update(c[2:].sum(), c.sum(), b[2:].sum(), b.sum())  # slower than 0.1 s
            if shift_at == 120 and stream.log_e_value >= math.log(100):
                shift_at = t + 1
            if edge_at == 120 and edge.log_e_value >= math.log(100):
                edge_at = t + 1
        shift_polls.append(shift_at)
        edge_polls.append(edge_at)
    assert np.median(shift_polls) < 0.85 * np.median(edge_polls)


def test_state_round_trip_and_a_bad_state_starts_over() -> None:
    rng = np.random.default_rng(34)
    stream = reference(rng)
    canary, baseline = rng.multinomial(150, lognormal_probs(0.1)), rng.multinomial(150, lognormal_probs(0.08))
    stream.update(cumulative(canary), cumulative(baseline), 1.0)
    resumed = ShiftStream.from_state(stream.to_state())
    assert resumed is not None
    assert np.array_equal(resumed.log_e, stream.log_e) and resumed.log_detector == stream.log_detector
    assert ShiftStream.from_state({"bounds": "nonsense"}) is None


def test_a_histogram_check_weighs_the_shift_stream_and_the_edges_half_and_half() -> None:
    """Against a concurrent baseline, the check's evidence is the mean of the shift stream's and the
    edges' average; the report shows the shift's e-value and favoured scale; a restart keeps it."""
    rng = np.random.default_rng(35)
    config = CheckConfig.model_validate(
        {"name": "latency", "type": "histogram", "provider": "p", "query": "q"}
    )
    check = HistogramCheck(config, 0.01, 60)
    check.set_reference([cumulative(rng.multinomial(150, lognormal_probs(0.08))) for _ in range(60)])
    assert check.shift is not None
    for _ in range(10):
        check.observe(
            cumulative(rng.multinomial(150, lognormal_probs(0.12))),
            cumulative(rng.multinomial(150, lognormal_probs(0.08))),
        )
    edges = np.mean([s.e_value for s in check.streams])
    assert math.isclose(
        math.exp(check.log_e_value), (math.exp(check.shift.log_e_value) + edges) / 2, rel_tol=1e-9
    )
    report = check.report()
    assert report.statistics["shift"]["scale"] > 1.2
    assert "latencies about x1." in report.summary
    resumed = HistogramCheck(config, 0.01, 60)
    resumed.load_state(check.to_state())
    assert resumed.shift is not None and resumed.log_e_value == check.log_e_value
    slo = HistogramCheck(
        CheckConfig.model_validate(
            {"name": "l", "type": "histogram", "provider": "p", "query": "q", "compare": "slo",
             "edges": [0.5], "objective": 0.01}
        ),
        0.01,
        60,
    )
    slo.set_reference([cumulative(rng.multinomial(150, lognormal_probs(0.08))) for _ in range(5)])
    assert slo.shift is None  # one version only: the SLO edge is the whole test


def _evidence_per_interval(cum: list[float], intervals: int, scale: float) -> float:
    """The expected log likelihood ratio of one interval at ``scale``, from scipy's relative
    entropy: per bucket, the canary's share of its requests (binomial, equal traffic) under the
    slowdown (at most RATIO_CAP times the share now) against a half."""
    per_bucket = np.diff(np.asarray(cum), prepend=0.0) / intervals
    rho = np.clip(predicted_ratios(BOUNDS, cum, np.array([scale]))[0], 1 / RATIO_CAP, RATIO_CAP)
    share = rho / (1 + rho)
    kl = rel_entr(share, 0.5) + rel_entr(1 - share, 0.5)
    return float(np.sum(per_bucket * (1 + rho) * kl))


def test_scale_span_fits_the_multipliers_to_the_traffic_before_the_deploy() -> None:
    """At 150 requests per interval the top comes down to about x1.2, where three intervals'
    expected evidence reaches the threshold (checked against scipy's relative entropy); at 5
    requests per interval the lower end rises to where the whole bake's reaches half of it; with
    no requests the default stays. The grid adds light bets beyond a lowered top."""
    log_threshold = math.log(2 / (0.75 * 0.005))
    busy = [*(np.cumsum(lognormal_probs(0.08))[:-1] * 150 * 60), 150 * 60]
    low, top = scale_span(BOUNDS, busy, 60, 60, log_threshold)
    assert low == SCALE_SPAN[0] and 1.15 < top < 1.25
    evidence = SPAN_TOP_INTERVALS * _evidence_per_interval(busy, 60, top)
    assert evidence == pytest.approx(log_threshold, rel=0.03)
    quiet = [*(np.cumsum(lognormal_probs(0.08))[:-1] * 5 * 60), 5 * 60]
    low_q, top_q = scale_span(BOUNDS, quiet, 60, 60, log_threshold)
    assert low_q > 1.1 and top_q >= low_q**6
    assert 60 * _evidence_per_interval(quiet, 60, low_q) == pytest.approx(0.5 * log_threshold, rel=0.03)
    assert scale_span(BOUNDS, [0.0] * 7, 60, 60, log_threshold) == SCALE_SPAN
    scales, log_weights = scale_grid((low, top))
    assert list(scales[14:]) == pytest.approx([top**1.6, top**2.6])
    assert np.exp(log_weights[14:]) == pytest.approx(0.3 * np.exp(log_weights[0]))


def test_a_fitted_span_stays_valid_under_the_null_and_survives_a_restart() -> None:
    """The span comes from data before the deploy only: healthy canaries peeked at every poll cross
    1/0.05 within the binomial bound of 5 %. A resumed stream rebuilds the same multipliers; a
    state saved before spans were fitted gets the default ones."""
    rng = np.random.default_rng(36)
    base = lognormal_probs(0.08)
    cum = [*(np.cumsum(base)[:-1] * 150 * 60), 150 * 60]
    span = scale_span(BOUNDS, cum, 60, 60, math.log(1 / 0.05))
    assert span[1] < 1.5
    runs, alarms = 200, 0
    for _ in range(runs):
        stream = ShiftStream(BOUNDS, cum, span)
        for _ in range(60):
            c, b = rng.multinomial(rng.poisson(150), base), rng.multinomial(rng.poisson(150), base)
            stream.update(cumulative(c), cumulative(b), 1.0)
            if stream.log_e_value >= math.log(1 / 0.05):
                alarms += 1
                break
    assert alarms <= stats.binom.ppf(0.99, runs, 0.05)
    state = stream.to_state()
    resumed = ShiftStream.from_state(state)
    assert resumed is not None and np.array_equal(resumed.scales, stream.scales)
    del state["span"]
    old = ShiftStream.from_state(state)
    assert old is not None and np.array_equal(old.scales, SCALES)


def test_a_histogram_check_fits_its_shift_span_only_with_history() -> None:
    """An hour of history fits the multipliers (150 requests per interval: top below x1.5); edges
    taken from the first poll (no history) leave the default range."""
    config = CheckConfig.model_validate(
        {"name": "latency", "type": "histogram", "provider": "p", "query": "q"}
    )
    rng = np.random.default_rng(37)
    with_history = HistogramCheck(config, 0.01, 60)
    with_history.set_reference([cumulative(rng.multinomial(150, lognormal_probs(0.08))) for _ in range(60)])
    assert with_history.shift is not None and with_history.shift.span[1] < 1.5
    first_poll = HistogramCheck(config, 0.01, 60)
    first_poll.set_reference(None)
    def poll() -> dict[float, float]:
        return cumulative(rng.multinomial(150, lognormal_probs(0.08)))

    first_poll.observe(poll(), poll())
    assert first_poll.shift is not None and first_poll.shift.span == SCALE_SPAN


def test_one_baseline_request_in_a_bucket_the_history_never_saw_costs_little() -> None:
    """An hour at 30 requests per interval has no request above 1 s, so the predicted growth of
    that bucket under a slowdown is meaningless (10^4 and more). The stream bets at most x20 there:
    a baseline request landing in it costs the evidence under 3 nats, not 11."""
    rng = np.random.default_rng(38)
    history = sum(rng.multinomial(30, lognormal_probs(0.08)) for _ in range(60))
    assert history[5] == 0 and history[6] == 0  # (1 s, 2.5 s] and beyond: never seen
    cum = [float(v) for v in np.cumsum(history)]
    assert predicted_ratios(BOUNDS, cum, SCALES)[:, 5].max() > 1e4
    canary, baseline = rng.multinomial(30, lognormal_probs(0.12)), rng.multinomial(30, lognormal_probs(0.08))
    moved = baseline.copy()
    moved[np.flatnonzero(moved)[-1]] -= 1
    moved[5] += 1
    plain, unlucky = ShiftStream(BOUNDS, cum), ShiftStream(BOUNDS, cum)
    plain.update(cumulative(canary), cumulative(baseline), 1.0)
    unlucky.update(cumulative(canary), cumulative(moved), 1.0)
    assert plain.log_e_value - unlucky.log_e_value < 3


def test_scale_dispersion_sees_latencies_that_wobble_together() -> None:
    """Independent requests: the scale direction's X^2 / dof is about 1. Each interval's latencies
    scaled as one (x exp(N(0, 0.2))): it is several times 1, and more than any single edge's
    dispersion factor shows, since every bucket moves the same way at once."""
    rng = np.random.default_rng(41)

    def history(sigma: float) -> list[list[float]]:
        rows = []
        for _ in range(120):
            counts = rng.multinomial(1500, lognormal_probs(0.08 * math.exp(rng.normal(0, sigma))))
            cum = cumulative(counts)
            rows.append([cum[b] for b in BOUNDS] + [cum[math.inf]])
        return rows

    pearson, dof = scale_dispersion(BOUNDS, history(0.0))
    assert dof == 119
    assert stats.chi2.ppf(0.001, dof) < pearson < stats.chi2.ppf(0.999, dof)
    wobbly = history(0.2)
    pearson, dof = scale_dispersion(BOUNDS, wobbly)
    assert pearson / dof > 5
    for i in range(len(BOUNDS)):
        slow = [RatioCounts(row[-1] - row[i], row[-1]) for row in wobbly]
        edge_pearson, edge_dof = dispersion_sum(slow)
        assert edge_dof == 0 or edge_pearson / edge_dof < pearson / dof
    assert scale_dispersion(BOUNDS, wobbly[:1]) == (0.0, 0.0)


def test_a_histogram_check_floors_its_shift_dispersion_at_the_whole_distributions() -> None:
    """The window before gives the check the scale direction's dispersion (at its 75 % bound on
    the excess), and the shift stream is judged with at least that, whatever the edges say."""
    rng = np.random.default_rng(42)
    config = CheckConfig.model_validate({"name": "l", "type": "histogram", "provider": "p", "query": "q"})
    check = HistogramCheck(config, 0.01, 60)
    medians = 0.08 * np.exp(rng.normal(0, 0.2, 120))
    check.set_reference([cumulative(rng.multinomial(1500, lognormal_probs(m))) for m in medians])
    assert check.reference is not None
    whole = check.reference["shift_dispersion"]
    assert whole > max(check.reference["dispersion"])
    assert check._shift_phi() == whole
    poll = cumulative(rng.multinomial(1500, lognormal_probs(0.08)))
    assert check._shift_phi(check._edge_phis(poll, poll)) == whole
