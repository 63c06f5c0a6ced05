"""Check types and guards (issue 3): histograms, gauges, compare: before, early pass, the late-onset
detector, the end-of-bake look and the dispersion factor, on small seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from watchdog.analysis import GaugeCheck, HistogramCheck, PolicyAnalysis, RatioCheck, RatioCounts
from watchdog.analysis.checks import edge_span, history_autocorrelation
from watchdog.analysis.eprocess import CHI2_SPREAD, HEAVY_SPREAD
from watchdog.config.models import CheckConfig, PolicyConfig
from watchdog.model import Verdict

EDGES = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def check_config(**kw: object) -> CheckConfig:
    base: dict[str, object] = {"name": "c", "type": "ratio", "provider": "p", "bad": "b", "total": "t"}
    if kw.get("type") in ("histogram", "gauge"):
        base.pop("bad"), base.pop("total")
        base["query"] = "q"
    return CheckConfig.model_validate({**base, **kw})


def policy(*checks: dict[str, object], bake: str = "30m") -> PolicyConfig:
    full = [
        {"name": f"c{i}", "type": "ratio", "provider": "p", "bad": "b", "total": "t", **c}
        for i, c in enumerate(checks)
    ]
    for c in full:
        if c["type"] != "ratio":
            c.pop("bad"), c.pop("total")
            c["query"] = "q"
    return PolicyConfig.model_validate(
        {"name": "p", "bake": bake, "interval": "30s", "alpha": 0.01, "checks": full}
    )


def buckets(rng: np.random.Generator, n: int, median: float, slow_share: float = 0.0) -> dict[float, float]:
    latencies = rng.lognormal(math.log(median), 0.5, n)
    slow = rng.random(n) < slow_share
    latencies[slow] *= 10
    out = {le: float((latencies <= le).sum()) for le in EDGES}
    out[math.inf] = float(n)
    return out


def ratio_run(rng, check: RatioCheck, p_c, p_b, n=300, polls=60, onset=0, before=True) -> int | None:
    if before:
        check.set_reference([RatioCounts(rng.binomial(n, p_b), n) for _ in range(60)])
    for t in range(polls):
        pc = p_c if t >= onset else p_b
        check.observe(RatioCounts(rng.binomial(n, pc), n), RatioCounts(rng.binomial(n, p_b), n))
        if t == polls - 1:
            check.finish()
        if check.verdict(final=t == polls - 1) is Verdict.FAIL:
            return t + 1
    return None


def test_histogram_chooses_edges_from_before_the_deploy_and_catches_a_latency_shift() -> None:
    """Edges come from the pre-deploy buckets (nearest p50/p90/p99); a x1.5 slowdown is caught."""
    rng = np.random.default_rng(1)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    check.set_reference(buckets(rng, 20000, 0.1))
    assert check.edges and all(e in EDGES for e in check.edges)
    for t in range(30):
        check.observe(buckets(rng, 400, 0.15), buckets(rng, 400, 0.1))
        if check.verdict(final=False) is Verdict.FAIL:
            break
    assert check.verdict(final=False) is Verdict.FAIL and t < 20
    report = check.report()
    assert "slower than" in report.summary and report.statistics["edges"]


def test_histogram_healthy_deploys_pass_and_a_tail_regression_fails() -> None:
    rng = np.random.default_rng(2)
    alarms = 0
    for _ in range(100):
        check = HistogramCheck(check_config(type="histogram"), 0.01, 30)
        check.set_reference(buckets(rng, 5000, 0.1))
        for _ in range(30):
            check.observe(buckets(rng, 200, 0.1), buckets(rng, 200, 0.1))
        check.finish()
        alarms += check.verdict(final=True) is Verdict.FAIL
    assert alarms <= 3
    tail = HistogramCheck(check_config(type="histogram"), 0.01, 30)
    tail.set_reference(buckets(rng, 5000, 0.1))
    for _ in range(30):
        tail.observe(buckets(rng, 400, 0.1, slow_share=0.05), buckets(rng, 400, 0.1))
    assert tail.verdict(final=False) is Verdict.FAIL


def test_histogram_without_history_takes_edges_from_the_first_poll_and_skips_it() -> None:
    rng = np.random.default_rng(3)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 30)
    check.set_reference(None)
    check.observe(buckets(rng, 400, 0.1), buckets(rng, 400, 0.1))
    assert check.edges and check.streams[0].intervals == 0
    check.observe(buckets(rng, 400, 0.1), buckets(rng, 400, 0.1))
    assert check.streams[0].intervals == 1


def test_histogram_blinds_a_poll_whose_bucket_layout_changed() -> None:
    check = HistogramCheck(check_config(type="histogram", edges=[0.25]), 0.01, 30)
    check.observe({0.5: 10, math.inf: 20}, {0.5: 10, math.inf: 20})
    assert check.blind_polls == 1 and "bucket layout changed" in check.last_problem
    check.observe({0.25: 30, 0.1: 40, math.inf: 50}, {0.25: 5, math.inf: 20})
    assert "not cumulative" in check.last_problem


def test_histogram_slo_counts_requests_slower_than_the_threshold() -> None:
    """compare: slo with edges [0.5] and objective 0.01: 5 % slower than 0.5 s fails."""
    rng = np.random.default_rng(4)
    check = HistogramCheck(
        check_config(type="histogram", compare="slo", edges=[0.5], objective=0.01), 0.01, 30
    )
    for _ in range(10):
        check.observe(buckets(rng, 400, 0.1, slow_share=0.08), None)
    assert check.verdict(final=False) is Verdict.FAIL


def test_gauge_msprt_catches_a_cpu_increase_and_leaves_noise_alone() -> None:
    """Block means of canary-minus-baseline CPU: +20 % of a noisy 0.4 is caught; equal gauges are
    not (100 seeded runs, no false alarm expected at alpha 1 %)."""
    rng = np.random.default_rng(5)
    caught = 0
    for _ in range(20):
        check = GaugeCheck(check_config(type="gauge", block="1m"), 0.01, 60, 30.0)
        for _ in range(60):
            check.observe(0.48 + rng.normal(0, 0.05), 0.40 + rng.normal(0, 0.05))
        caught += check.verdict(final=False) is Verdict.FAIL
    assert caught >= 19
    alarms = 0
    for _ in range(100):
        check = GaugeCheck(check_config(type="gauge", block="1m"), 0.01, 60, 30.0)
        for _ in range(60):
            check.observe(0.4 + rng.normal(0, 0.05), 0.4 + rng.normal(0, 0.05))
        check.finish()
        alarms += check.verdict(final=True) is Verdict.FAIL
    assert alarms <= 3


def test_gauge_noise_correlated_from_poll_to_poll_stays_near_alpha() -> None:
    """AR(1) noise with r = 0.7 between 30 s polls (a CPU that drifts): 300 seeded healthy runs of
    60 polls with 2-minute blocks roll back no more often than alpha allows (its binomial 99 %
    bound), and at most one in the first 30 polls, when a variance from a handful of block means
    alone would still miss the correlation; a clear increase is still caught in most runs."""
    rng = np.random.default_rng(26)

    def run(shift: float) -> int | None:
        check = GaugeCheck(check_config(type="gauge"), 0.01, 60, 30.0)
        noise = 0.0
        for t in range(60):
            noise = 0.7 * noise + rng.normal(0, 0.05) * math.sqrt(1 - 0.49)
            check.observe(0.4 + shift + noise, 0.4)
            if t == 59:
                check.finish()
            if check.verdict(final=t == 59) is Verdict.FAIL:
                return t + 1
        return None

    alarms = [at for at in (run(0.0) for _ in range(300)) if at is not None]
    assert len(alarms) <= stats.binom.ppf(0.99, 300, 0.01)
    assert sum(at <= 30 for at in alarms) <= 1
    assert sum(run(0.1) is not None for _ in range(20)) >= 18


def test_history_autocorrelation_is_the_lag_one_estimate_raised_by_its_bias() -> None:
    """Against the textbook estimate (numpy, around the mean): r plus (1 + 4r)/n; too short or
    flat a history gives none."""
    rng = np.random.default_rng(30)
    values = list(np.cumsum(rng.normal(0, 1, 200)) * 0.01 + rng.normal(0, 0.05, 200))
    x = np.asarray(values) - np.mean(values)
    r = float(np.sum(x[:-1] * x[1:]) / np.sum(x * x))
    assert history_autocorrelation(values) == pytest.approx(r + (1 + 4 * r) / 200)
    assert history_autocorrelation(values[:19]) is None
    assert history_autocorrelation([0.4] * 50) is None


def test_only_one_sample_gauges_read_the_hour_before() -> None:
    """compare: before (its mean) and slo (its drift) ask for the window before the deploy; against
    a concurrent baseline the history of one version would mislead (shared drift cancels)."""
    slo = GaugeCheck(check_config(type="gauge", compare="slo", objective=0.5), 0.01, 60, 30.0)
    before = GaugeCheck(check_config(type="gauge", compare="before"), 0.01, 60, 30.0)
    baseline = GaugeCheck(check_config(type="gauge"), 0.01, 60, 30.0)
    assert slo.needs_reference and before.needs_reference and not baseline.needs_reference
    slo.set_reference([0.4 + 0.01 * (k % 5) for k in range(120)])
    assert not slo.needs_reference
    assert slo.reference is not None and slo.reference["autocorrelation"] is not None


def test_a_slowly_drifting_gauge_against_an_objective_stays_under_alpha_with_the_hour_before() -> None:
    """AR(1) noise with r = 0.9 between 30 s polls, compare: slo at the gauge's level: a 30-minute
    bake sees three or four independent values, and its own polls underestimate the drift (3.4 %
    of healthy deploys rolled back in bench/gauge_noise.py). With the autocorrelation of the hour
    before as a floor, 300 seeded healthy runs roll back no more often than alpha allows (its
    binomial 99 % bound)."""
    rng = np.random.default_rng(31)

    def series(n: int) -> list[float]:
        out, value = [], rng.normal(0, 0.05)
        for _ in range(n):
            value = 0.9 * value + rng.normal(0, 0.05) * math.sqrt(1 - 0.81)
            out.append(0.4 + value)
        return out

    alarms = 0
    for _ in range(300):
        check = GaugeCheck(check_config(type="gauge", compare="slo", objective=0.4), 0.01, 60, 30.0)
        check.set_reference(series(120)[::-1])
        for value in series(60):
            check.observe(value, None)
        check.finish()
        alarms += check.verdict(final=True) is Verdict.FAIL
    assert alarms <= stats.binom.ppf(0.99, 300, 0.01)


def test_gauge_variance_rests_on_the_polls_not_only_on_a_handful_of_blocks() -> None:
    """After six 2-minute blocks of independent noise, the long-run variance of a block mean is
    estimated from the 24 polls as well as from the six means: over 200 seeded runs its 10th
    percentile is at least 0.7 of the truth (six block means alone give about 0.5), so a lucky
    quiet start does not turn into false evidence."""
    rng = np.random.default_rng(27)
    estimates = []
    for _ in range(200):
        check = GaugeCheck(check_config(type="gauge"), 0.01, 60, 30.0)
        for _ in range(24):
            check.observe(0.4 + rng.normal(0, 0.05), 0.4)
        estimates.append(check._long_run_variance())
    truth = 0.05**2 / 4
    assert np.quantile(estimates, 0.1) >= 0.7 * truth
    assert np.median(estimates) <= 1.6 * truth


def test_gauge_mann_whitney_is_judged_once_at_the_end_like_kayenta() -> None:
    rng = np.random.default_rng(6)
    check = GaugeCheck(check_config(type="gauge", test="mann-whitney"), 0.01, 30, 30.0)
    canary = [0.5 + rng.normal(0, 0.05) for _ in range(30)]
    baseline = [0.4 + rng.normal(0, 0.05) for _ in range(30)]
    for c, b in zip(canary, baseline, strict=True):
        check.observe(c, b)
        assert check.verdict(final=False) is Verdict.PENDING
    check.finish()
    expected = stats.mannwhitneyu(canary, baseline, alternative="greater").pvalue
    assert check.end_p == pytest.approx(expected)
    assert check.verdict(final=True) is Verdict.FAIL


def test_compare_before_tests_against_the_window_before_the_deploy() -> None:
    """A rolling deploy: 0.5 % errors before, 2 % after: fails; 0.5 % after: passes."""
    rng = np.random.default_rng(7)
    bad = RatioCheck(check_config(compare="before"), 0.01, 60)
    bad.set_reference([RatioCounts(rng.binomial(600, 0.005), 600) for _ in range(60)])
    assert bad.reference is not None and bad.reference["objective"] > 0.005
    for _ in range(20):
        bad.observe(RatioCounts(rng.binomial(600, 0.02), 600), None)
    assert bad.verdict(final=False) is Verdict.FAIL
    assert "before the deploy" in bad.report().summary
    good = RatioCheck(check_config(compare="before"), 0.01, 60)
    good.set_reference([RatioCounts(rng.binomial(600, 0.005), 600) for _ in range(60)])
    for _ in range(60):
        good.observe(RatioCounts(rng.binomial(600, 0.005), 600), None)
    good.finish()
    assert good.verdict(final=True) is Verdict.PASS


def test_compare_before_without_history_is_blind_not_failing() -> None:
    check = RatioCheck(check_config(compare="before"), 0.01, 60)
    check.set_reference([])
    check.observe(RatioCounts(50, 100), None)
    assert check.verdict(final=True) is Verdict.INCONCLUSIVE
    assert "before the deploy had no data" in check.last_problem


def test_early_pass_needs_a_confident_upper_bound_under_the_tolerance() -> None:
    """With tolerance 0.2 and lots of healthy traffic the check passes early; a x1.5 canary never
    passes early (it fails)."""
    rng = np.random.default_rng(8)
    good = RatioCheck(check_config(tolerance=0.2), 0.01, 60)
    for t in range(60):
        good.observe(
            RatioCounts(rng.binomial(20000, 0.01), 20000), RatioCounts(rng.binomial(20000, 0.01), 20000)
        )
        if good.verdict(final=False) is Verdict.PASS:
            break
    assert good.verdict(final=False) is Verdict.PASS and t < 30
    low, high = good.stream.confidence_interval(0.05)
    assert high <= 1.2 and low <= 1.0 <= high
    bad = RatioCheck(check_config(tolerance=0.2), 0.01, 60)
    verdicts = set()
    for _ in range(30):
        bad.observe(
            RatioCounts(rng.binomial(20000, 0.015), 20000), RatioCounts(rng.binomial(20000, 0.01), 20000)
        )
        verdicts.add(bad.verdict(final=False))
    assert Verdict.PASS not in verdicts and Verdict.FAIL in verdicts


def test_policy_passes_early_only_when_every_check_passed_early() -> None:
    analysis = PolicyAnalysis(policy({"tolerance": 0.2}, {}))
    rng = np.random.default_rng(9)
    for _ in range(40):
        for check in analysis.checks.values():
            check.observe(
                RatioCounts(rng.binomial(20000, 0.01), 20000), RatioCounts(rng.binomial(20000, 0.01), 20000)
            )
    assert analysis.decide(final=False).verdict is Verdict.PENDING


def test_late_onset_is_caught_after_a_long_healthy_stretch() -> None:
    """A x3 regression starting at poll 40 of 120 (a leak after 20 minutes): caught before the
    end of the bake in most seeded runs, by the detector or the main test."""
    rng = np.random.default_rng(10)
    delays = []
    for _ in range(40):
        check = RatioCheck(check_config(), 0.01, 120)
        hit = ratio_run(rng, check, 0.015, 0.005, n=300, polls=120, onset=40)
        delays.append(hit)
    caught = [d for d in delays if d is not None and d < 120]
    assert len(caught) >= 36
    assert all(d > 40 for d in caught)


def test_end_of_bake_look_catches_a_small_effect_the_sequential_test_missed() -> None:
    """A x1.3 regression at moderate traffic: some runs are only caught by the fixed-horizon look."""
    rng = np.random.default_rng(11)
    by = []
    for _ in range(60):
        check = RatioCheck(check_config(), 0.01, 60)
        ratio_run(rng, check, 0.013, 0.01, n=600)
        by.append(check.failed_by)
    assert "end" in by and "sequential" in by


def test_dispersion_from_before_the_deploy_keeps_bursty_errors_from_rolling_back() -> None:
    """Gamma-bursty errors (k=1) on both arms at 100 req/s: with the dispersion factor from the
    hour before the deploy, no more false rollbacks than alpha allows (seeded, 200 runs)."""
    rng = np.random.default_rng(12)
    alarms = 0
    for _ in range(200):
        check = RatioCheck(check_config(), 0.01, 60)
        n = 3000
        check.set_reference([RatioCounts(rng.binomial(n, 0.01 * rng.gamma(1, 1)), n) for _ in range(60)])
        for t in range(60):
            check.observe(
                RatioCounts(rng.binomial(n, min(1, 0.01 * rng.gamma(1, 1))), n),
                RatioCounts(rng.binomial(n, min(1, 0.01 * rng.gamma(1, 1))), n),
            )
        check.finish()
        alarms += check.verdict(final=True) is Verdict.FAIL
    assert check.stream.phi > 5
    assert stats.binomtest(alarms, 200, 0.01, alternative="greater").pvalue > 0.001, alarms


def test_check_state_round_trips_through_json_for_every_type() -> None:
    """A resumed Watch restores each check's evidence exactly (state goes through JSON in the store)."""
    import json

    rng = np.random.default_rng(13)
    ratio = RatioCheck(check_config(compare="before"), 0.01, 60)
    ratio.set_reference([RatioCounts(3, 600) for _ in range(10)])
    ratio.observe(RatioCounts(9, 600), None)
    hist = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    hist.set_reference(buckets(rng, 5000, 0.1))
    hist.observe(buckets(rng, 400, 0.12), buckets(rng, 400, 0.1))
    gauge = GaugeCheck(check_config(type="gauge", block="30s"), 0.01, 60, 30.0)
    for _ in range(5):
        gauge.observe(0.5 + rng.normal(0, 0.01), 0.4)
    for check, fresh in (
        (ratio, RatioCheck(check_config(compare="before"), 0.01, 60)),
        (hist, HistogramCheck(check_config(type="histogram"), 0.01, 60)),
        (gauge, GaugeCheck(check_config(type="gauge", block="30s"), 0.01, 60, 30.0)),
    ):
        fresh.load_state(json.loads(json.dumps(check.to_state())))
        assert fresh.report() == check.report()


def test_histogram_history_gives_edges_down_to_p999_and_a_measured_dispersion() -> None:
    """Sixty intervals before the deploy: the edges come from their sum (nearest p50, p90, p99 and
    p99.9), each edge's dispersion from its per-interval slow counts (near 1 for independent
    requests, not the assumed 1.5), and an interval with another bucket layout is left out."""
    rng = np.random.default_rng(21)
    history = [buckets(rng, 600, 0.15) for _ in range(60)]
    history.append({0.1: 10.0, math.inf: 20.0})  # an older layout
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    assert check.needs_reference
    check.set_reference(history)
    assert check.reference is not None and check.reference["intervals"] == 60
    assert check.edges == [0.25, 0.5, 1.0]  # p50, p90 and p99 share 0.5; p99.9 adds 1.0
    # at the p50 and p90 edges slow requests in every interval measure it (near 1, well under the
    # assumed 1.48); beyond p99 this history has none, and the assumed dispersion stays
    measured, assumed = check.streams[:2], check.streams[2]
    assert all(s.prior_phi is not None and s.prior_phi < 1.45 for s in measured)
    assert check.reference["dispersion"][2] is None and assumed.prior_phi is not None
    assert assumed.prior_phi > 1.45


def test_histogram_with_a_single_reference_interval_keeps_the_assumed_dispersion() -> None:
    """One cumulative point (a recording made before histories were fetched) still gives edges,
    but no per-interval variation: the streams keep the assumed, cautious dispersion."""
    rng = np.random.default_rng(22)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    check.set_reference(buckets(rng, 20000, 0.1))
    assert check.edges
    assert all(s.prior_phi is not None and s.prior_phi > 1.4 for s in check.streams)


def test_configured_edges_still_read_the_history_for_their_dispersion() -> None:
    """With ``edges`` configured the history does not move them; it only measures them."""
    rng = np.random.default_rng(23)
    check = HistogramCheck(check_config(type="histogram", edges=[0.25]), 0.01, 60)
    assert check.needs_reference
    check.set_reference([buckets(rng, 600, 0.1) for _ in range(30)])
    assert check.edges == [0.25] and check.streams[0].prior_phi is not None
    assert check.streams[0].prior_phi < 1.4


def test_an_edge_bets_only_on_ratios_its_share_allows_and_keeps_them_after_a_restart() -> None:
    """An edge that 40 % of requests are slower than cannot see a ratio above 2.5, and a slowdown
    moves its share by little: its mixture spans about x1.09 to x2.5. A tail edge keeps the default
    span. A resumed check rebuilds the same alternatives from the saved shares."""
    low, high = edge_span(0.4)
    assert math.isclose(low, 1.09) and math.isclose(high, 2.5)
    assert edge_span(0.001) == (pytest.approx(1.14985), 6.0)
    rng = np.random.default_rng(24)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    check.set_reference([buckets(rng, 600, 0.15) for _ in range(30)])
    assert all(share is not None for share in check.shares)
    assert check.streams[0].alt.max() <= 1 / check.shares[0]  # type: ignore[operator]
    for _ in range(3):
        check.observe(buckets(rng, 400, 0.15), buckets(rng, 400, 0.15))
    resumed = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    resumed.load_state(check.to_state())
    assert resumed.shares == check.shares
    for a, b in zip(resumed.streams, check.streams, strict=True):
        assert np.array_equal(a.alt, b.alt) and a.log_e_value == b.log_e_value


def test_histogram_compare_before_tests_each_edge_against_its_share_before_the_deploy() -> None:
    """compare: before: each edge's share of slower requests before the deploy (at the upper bound
    of its interval) is the objective of a one-sample test. The same latencies pass, twice as slow
    fail, no history leaves the check blind, and a restart keeps the objectives."""
    rng = np.random.default_rng(25)
    history = [buckets(rng, 600, 0.1) for _ in range(60)]
    config = check_config(type="histogram", compare="before")
    same = HistogramCheck(config, 0.01, 30)
    same.set_reference(history)
    assert same.edges and all(o is not None and 0 < o < 1 for o in same.objectives)
    assert same.alpha == pytest.approx(0.01 * 0.8) and same.shift is None
    for _ in range(30):
        same.observe(buckets(rng, 400, 0.1), None)
    same.finish()
    assert same.verdict(final=True) is Verdict.PASS
    slower = HistogramCheck(config, 0.01, 30)
    slower.set_reference(history)
    for _ in range(10):
        slower.observe(buckets(rng, 400, 0.2), None)
    assert slower.verdict(final=False) is Verdict.FAIL
    assert "before the deploy" in slower.report().summary
    resumed = HistogramCheck(config, 0.01, 30)
    resumed.load_state(slower.to_state())
    assert resumed.objectives == slower.objectives
    blind = HistogramCheck(config, 0.01, 30)
    blind.set_reference(None)
    blind.observe(buckets(rng, 400, 0.2), None)
    assert blind.blind_polls == 1 and "no data to compare with" in blind.last_problem


def test_ratio_check_fits_its_mixture_to_the_traffic_before_the_deploy() -> None:
    """A service with 0.6 errors per interval: the check's mixture starts above x1.15, the span is
    kept in the reference, and a resumed check rebuilds the same alternatives. A busy service keeps
    the default lower end and brings the top down to what its first polls decide anyway; a
    `direction: decrease` check keeps the default span."""
    import json

    quiet = RatioCheck(check_config(), 0.01, 120)
    quiet.set_reference([RatioCounts(0.6 if i % 5 else 0.0, 30) for i in range(60)])
    assert quiet.reference is not None and quiet.reference["span"][0] > 1.3
    assert quiet.stream.alt.min() == pytest.approx(quiet.reference["span"][0])
    assert quiet.stream.prior_phi is not None  # the dispersion from before survives the rebuild
    quiet.observe(RatioCounts(2, 30), RatioCounts(1, 30))
    resumed = RatioCheck(check_config(), 0.01, 120)
    resumed.load_state(json.loads(json.dumps(quiet.to_state())))
    assert np.array_equal(resumed.stream.alt, quiet.stream.alt) and resumed.report() == quiet.report()

    busy = RatioCheck(check_config(), 0.01, 60)
    busy.set_reference([RatioCounts(30, 30000) for _ in range(60)])
    assert busy.reference is not None and busy.reference["span"] == pytest.approx([1.15, 2.3])
    assert busy.stream.alt.min() == pytest.approx(1.15) and busy.stream.alt.max() == 20.0
    down = RatioCheck(check_config(direction="decrease"), 0.01, 120)
    down.set_reference([RatioCounts(0.6, 30) for _ in range(60)])
    assert "span" not in (down.reference or {})


def test_slo_check_fits_its_span_to_the_traffic_at_the_objective() -> None:
    """One sample: the events that matter are the traffic times the objective."""
    slo = RatioCheck(check_config(compare="slo", objective=0.01), 0.01, 60)
    slo.set_reference([RatioCounts(0, 20) for _ in range(60)])  # 0.2 errors per interval at 1 %
    assert slo.reference is not None and slo.reference["span"][0] > 1.5


def test_histogram_edges_fit_their_spans_to_the_slow_requests_before_the_deploy() -> None:
    """An hour at 150 requests per interval: every edge's range is narrowed (the busier edges'
    tops come down, the tail edges' lower ends rise past what the bake cannot show), and a resumed
    check rebuilds the same alternatives. A state saved before spans were fitted bets on the
    share's own range, and healthy canaries stay under alpha."""
    import json

    rng = np.random.default_rng(41)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    check.set_reference([buckets(rng, 150, 0.1, slow_share=0.02) for _ in range(60)])
    assert len(check.spans) == len(check.edges)
    for span, share in zip(check.spans, check.shares, strict=True):
        assert span is not None and share is not None and span != edge_span(share)
    tail = [i for i, share in enumerate(check.shares) if share is not None and share < 0.03]
    assert tail and all(check.spans[i] is not None for i in tail)
    for i in tail:
        span, share = check.spans[i], check.shares[i]
        assert span is not None and share is not None and span[0] > edge_span(share)[0]
        assert check.streams[i].alt.min() == pytest.approx(span[0])
    resumed = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    resumed.load_state(json.loads(json.dumps(check.to_state())))
    assert all(np.array_equal(a.alt, b.alt) for a, b in zip(resumed.streams, check.streams, strict=True))
    old = check.to_state()
    del old["spans"]
    before_spans = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    before_spans.load_state(old)
    assert before_spans.spans == [None] * len(check.edges)

    alarms = 0
    for _ in range(60):
        healthy = HistogramCheck(check_config(type="histogram"), 0.05, 60)
        healthy.set_reference([buckets(rng, 150, 0.1, slow_share=0.02) for _ in range(60)])
        for _ in range(60):
            healthy.observe(buckets(rng, 150, 0.1, slow_share=0.02), buckets(rng, 150, 0.1, slow_share=0.02))
        alarms += healthy.failed_by in ("sequential", "late-onset detector")
    assert stats.binomtest(alarms, 60, 0.05, alternative="greater").pvalue > 0.001, alarms


def _spiky_history(rng: np.random.Generator, spikes: int) -> list[dict[float, float]]:
    """An hour of one version's buckets at 600 requests an interval, the first ``spikes``
    intervals three times slower (one version's GC pauses)."""
    return [buckets(rng, 600, 0.06 * (3.0 if i < spikes else 1.0)) for i in range(120)]


def test_every_histogram_edge_is_judged_with_the_heaviest_tail_any_edge_saw() -> None:
    """Spikes show as a heavy tail at the slow edges and barely at the median's; every edge takes
    the heaviest, so none lets a few spike-free polls talk its factor down. A history without
    spikes leaves every edge at the chi-square's spread."""
    rng = np.random.default_rng(31)
    spiky = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    spiky.set_reference(_spiky_history(rng, 6))
    assert spiky.reference is not None and spiky.reference["spread"] > HEAVY_SPREAD
    assert {s.prior_spread for s in spiky.streams} == {spiky.reference["spread"]}
    calm = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    calm.set_reference(_spiky_history(rng, 0))
    assert calm.reference is not None and calm.reference["spread"] < HEAVY_SPREAD
    assert {s.prior_spread for s in calm.streams} == {CHI2_SPREAD}


def test_a_latency_spike_after_a_heavy_tailed_hour_is_judged_at_no_edge() -> None:
    """After a spiky hour, a poll where one version is three times slower is a surge of slow
    requests at the slow edges; the median's edge sees too few more to call it one. The whole
    poll is learned from, not judged: no edge's evidence moves."""
    rng = np.random.default_rng(32)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    check.set_reference(_spiky_history(rng, 6))
    for _ in range(5):
        check.observe(buckets(rng, 600, 0.06), buckets(rng, 600, 0.06))
    canary, baseline = buckets(rng, 600, 0.18), buckets(rng, 600, 0.06)
    assert all(math.isinf(p) for p in check._edge_phis(canary, baseline))
    before = [s.log_e_value for s in check.streams]
    check.observe(canary, baseline)
    assert [s.log_e_value for s in check.streams] == before


def test_histogram_edges_count_the_surges_any_edge_saw() -> None:
    """Both versions three times slower at once (a slow dependency) is a surge that hit both at
    the slow edges; the median's edge, which sees no surge, counts it too, so once the bake has
    shown such surges every edge trusts the bake's own dispersion again."""
    rng = np.random.default_rng(33)
    check = HistogramCheck(check_config(type="histogram"), 0.01, 60)
    check.set_reference(_spiky_history(rng, 6))
    for _ in range(3):
        check.observe(buckets(rng, 600, 0.18), buckets(rng, 600, 0.18))
    assert {tuple(s.surges) for s in check.streams} == {(3, 0)}
    assert {s.tail_spread for s in check.streams} == {CHI2_SPREAD}
