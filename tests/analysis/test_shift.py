"""The histogram shift stream (issue 3): its predicted bucket ratios, its closed form, its validity
under the null on small seeded simulations, and what it adds to a histogram check."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from watchdog.analysis import HistogramCheck
from watchdog.analysis.eprocess import CountStream
from watchdog.analysis.shift import SCALES, ShiftStream, predicted_ratios
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
    rho = predicted_ratios(BOUNDS, stream.reference, SCALES)
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
