"""The e-processes behind ratio checks: valid under every-poll peeking, fast on real regressions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp, rel_entr

from watchdog.analysis.checks import RatioCounts, dispersion_spread, dispersion_sum
from watchdog.analysis.eprocess import (
    CHI2_SPREAD,
    MIN_OWN_DOF,
    SPAN,
    SPAN_FLOOR_SHARE,
    SPAN_TOP_INTERVALS,
    SURE_OWN_DOF,
    SURGE,
    CountStream,
    _surge_weight,
    bake_span,
    effective_dof,
    grid,
    high_share,
    prior_dispersion,
)


def _with_history(test: CountStream) -> CountStream:
    """A stream that knew, from before the deploy, that errors are not bursty (phi about 1)."""
    test.seed_dispersion(59.0, 59.0)
    return test


def _first_crossing(
    test: CountStream,
    rng: np.random.Generator,
    p_c: float,
    p_b: float,
    n_c: int | np.ndarray,
    n_b: int | np.ndarray,
    polls: int,
    threshold: float,
) -> int | None:
    for k in range(polls):
        nc = int(n_c[k]) if isinstance(n_c, np.ndarray) else n_c
        nb = int(n_b[k]) if isinstance(n_b, np.ndarray) else n_b
        test.update(rng.binomial(nc, p_c), nc, rng.binomial(nb, p_b), nb)
        if test.e_value >= threshold:
            return k + 1
    return None


def _under_alpha(false_alarms: int, runs: int, alpha: float) -> bool:
    """The observed rate is compatible with a true rate <= alpha (one-sided test at 0.1 %)."""
    return stats.binomtest(false_alarms, runs, alpha, alternative="greater").pvalue > 0.001


@pytest.mark.parametrize(("rate", "n"), [(0.005, 200), (0.02, 50), (0.001, 1000)])
def test_two_sample_false_rollbacks_stay_under_alpha_when_peeking_every_poll(rate: float, n: int) -> None:
    """Healthy canary, 60 polls, the e-value looked at after each: the share of runs that ever cross
    1/alpha stays under alpha (Ville's inequality), across traffic levels."""
    rng = np.random.default_rng(7)
    alpha, runs = 0.05, 600
    alarms = sum(
        _first_crossing(CountStream(), rng, rate, rate, n, n, 60, 1 / alpha) is not None for _ in range(runs)
    )
    assert _under_alpha(alarms, runs, alpha), alarms


def test_two_sample_null_holds_when_the_traffic_split_changes_every_poll() -> None:
    """A canary ramping from 5 % to 50 % of traffic (and a shrinking baseline) does not fake a
    regression: the per-interval conditional test absorbs the split."""
    rng = np.random.default_rng(11)
    alpha, runs, polls = 0.05, 400, 40
    n_c = np.linspace(20, 400, polls).astype(int)
    n_b = np.linspace(400, 200, polls).astype(int)
    alarms = sum(
        _first_crossing(CountStream(), rng, 0.01, 0.01, n_c, n_b, polls, 1 / alpha) is not None
        for _ in range(runs)
    )
    assert _under_alpha(alarms, runs, alpha), alarms


def test_two_sample_null_is_composite_a_better_canary_never_fails() -> None:
    """A canary with half the baseline's errors is inside the null: no rollbacks at all here."""
    rng = np.random.default_rng(3)
    alarms = sum(
        _first_crossing(CountStream(), rng, 0.005, 0.01, 300, 300, 60, 100) is not None for _ in range(300)
    )
    assert alarms == 0


@pytest.mark.parametrize("theta_true_factor", [1.0, 0.8, 0.5])
def test_two_sample_per_interval_likelihood_ratio_has_expectation_at_most_one(
    theta_true_factor: float,
) -> None:
    """The supermartingale property, computed exactly with scipy's binomial pmf: for every grid
    alternative, E[LR] = 1 at the null's boundary and below it inside the null."""
    test = CountStream()
    n_c, n_b, bad = 300, 500, 12
    theta0 = n_c / (n_c + n_b)
    theta_true = theta0 * theta_true_factor
    x = np.arange(bad + 1)
    pmf = stats.binom.pmf(x, bad, theta_true)
    theta = test.alt * n_c / (test.alt * n_c + n_b)
    lr = (theta[:, None] / theta0) ** x * ((1 - theta[:, None]) / (1 - theta0)) ** (bad - x)
    expectation = (lr * pmf).sum(axis=1)
    if theta_true_factor == 1.0:
        assert np.allclose(expectation, 1.0)
    else:
        assert np.all(expectation < 1.0)


def test_two_sample_mixture_matches_its_closed_form() -> None:
    """After several updates the e-value equals the weighted mean over the grid of the products
    of the binomial likelihood ratios, each computed independently with scipy (dispersion off)."""
    test = CountStream(dispersion=False)
    data = [(3, 200, 1, 210), (5, 190, 2, 220), (0, 180, 1, 205)]
    for row in data:
        test.update(*row)
    expected = 0.0
    _, log_weights = grid("increase")
    assert math.isclose(float(np.exp(log_weights).sum()), 1.0)
    for rho, weight in zip(test.alt, np.exp(log_weights), strict=True):
        product = 1.0
        for bad_c, n_c, bad_b, n_b in data:
            theta0 = n_c / (n_c + n_b)
            theta = rho * n_c / (rho * n_c + n_b)
            product *= stats.binom.pmf(bad_c, bad_c + bad_b, theta) / stats.binom.pmf(
                bad_c, bad_c + bad_b, theta0
            )
        expected += weight * product
    assert math.isclose(test.e_value, expected, rel_tol=1e-9)


def test_two_sample_detects_a_twenty_fold_regression_within_three_polls() -> None:
    """10 % errors against 0.5 %, 200 requests per poll per arm: crossed within 3 polls in every
    one of 200 seeded runs."""
    rng = np.random.default_rng(5)
    delays = [
        _first_crossing(_with_history(CountStream()), rng, 0.10, 0.005, 200, 200, 30, 100) for _ in range(200)
    ]
    assert all(d is not None and d <= 3 for d in delays), delays


def test_two_sample_detects_a_doubling_at_moderate_traffic() -> None:
    """0.5 % doubling at 10 req/s with 30 s polls (300 requests per poll): most runs are caught
    within a 30 minute bake (60 polls), as DESIGN §7's reference point expects."""
    rng = np.random.default_rng(9)
    delays = [
        _first_crossing(_with_history(CountStream()), rng, 0.01, 0.005, 300, 300, 60, 100) for _ in range(200)
    ]
    caught = [d for d in delays if d is not None]
    assert len(caught) / len(delays) >= 0.8
    assert float(np.median(caught)) * 30 / 60 < 20  # median minutes to detect


def test_intervals_without_events_or_bad_events_leave_the_evidence_unchanged() -> None:
    """Zero traffic in an arm or no bad events at all carry no information about the ratio."""
    test = CountStream()
    for row in [(0, 0, 0, 100), (0, 100, 0, 0), (0, 100, 0, 100)]:
        test.update(*row)
    assert test.e_value == 1.0


def test_direction_decrease_flags_a_drop_and_not_a_rise() -> None:
    """`direction: decrease` (a success ratio): a drop is evidence, a rise is not."""
    drop, rise = _with_history(CountStream("decrease")), _with_history(CountStream("decrease"))
    for _ in range(5):
        drop.update(5, 200, 50, 200)
        rise.update(50, 200, 5, 200)
    assert drop.e_value > 100
    assert rise.e_value < 1


def test_one_sample_false_rollbacks_stay_under_alpha_at_the_objective() -> None:
    """Exactly at the SLO objective, peeking every poll for 60 polls: under alpha."""
    rng = np.random.default_rng(13)
    alpha, runs, alarms = 0.05, 600, 0
    for _ in range(runs):
        test = CountStream(objective=0.01)
        for _ in range(60):
            test.update(rng.binomial(200, 0.01), 200)
            if test.e_value >= 1 / alpha:
                alarms += 1
                break
    assert _under_alpha(alarms, runs, alpha), alarms


@pytest.mark.parametrize("p_true", [0.01, 0.008, 0.002])
def test_one_sample_likelihood_ratio_expectation_is_at_most_one_inside_the_null(p_true: float) -> None:
    """Exact expectation with scipy's pmf: 1 at the objective, below 1 under it."""
    test = CountStream(objective=0.01)
    n = 400
    x = np.arange(n + 1)
    log_pmf = stats.binom.logpmf(x, n, p_true)
    log_lr = x * np.log(test.alt[:, None] / 0.01) + (n - x) * (
        np.log1p(-test.alt[:, None]) - math.log1p(-0.01)
    )
    expectation = np.exp(logsumexp(log_lr + log_pmf, axis=1))
    assert np.all(expectation <= 1 + 1e-9)


def test_one_sample_catches_an_slo_breach() -> None:
    """5 % errors against a 1 % objective at 200 requests a poll: crossed within 3 polls."""
    test = CountStream(objective=0.01)
    for _ in range(3):
        test.update(10, 200)
    assert test.e_value >= 100


def test_state_round_trips_so_a_resumed_watch_keeps_its_evidence() -> None:
    """to_state/load_state restores the same e-value; a state of the wrong shape is ignored."""
    test = CountStream()
    test.update(6, 200, 1, 200)
    restored = CountStream()
    restored.load_state(test.to_state())
    assert restored.e_value == test.e_value
    ignored = CountStream()
    ignored.load_state({"log_e": [1.0, 2.0]})
    assert ignored.e_value == 1.0


def test_state_keeps_the_volumes_a_surge_is_measured_against() -> None:
    """A resumed stream scales its dispersion for a surge as the original would; a state saved
    before the volumes were kept resumes with the factor for every interval."""
    rng = np.random.default_rng(3)
    test = _bursty_history(CountStream())
    for _ in range(MIN_OWN_DOF + 2):
        test.update(rng.poisson(30), 3000, rng.poisson(30), 3000)
    restored = CountStream()
    restored.load_state(test.to_state())
    assert restored.phi_at(500.0) == test.phi_at(500.0) > test.phi
    old = {k: v for k, v in test.to_state().items() if k not in ("own_weight", "prior_weight")}
    legacy = CountStream()
    legacy.load_state(old)
    assert legacy.phi_at(500.0) == legacy.phi == test.phi


def test_confidence_sequence_matches_its_prequential_definition() -> None:
    """For each effect value e, the sequence's statistic is the sum over intervals of
    log p(x | theta(previous estimate)) - log p(x | theta(e)), computed here directly with scipy."""
    test = CountStream(dispersion=False)
    data = [(3, 200, 1, 210), (5, 190, 2, 220), (0, 180, 1, 205), (7, 400, 2, 100)]
    expected = np.zeros_like(test.cs)
    from watchdog.analysis.eprocess import _EFFECTS

    bc = nc = bb = nb = 0.0
    for bad_c, n_c, bad_b, n_b in data:
        rho_hat = ((bc + 0.5) / nc) / ((bb + 0.5) / nb) if nc and nb else 1.0
        x = bad_c + bad_b
        theta_hat = rho_hat * n_c / (rho_hat * n_c + n_b)
        theta = _EFFECTS * n_c / (_EFFECTS * n_c + n_b)
        expected += stats.binom.logpmf(bad_c, x, theta_hat) - stats.binom.logpmf(bad_c, x, theta)
        test.update(bad_c, n_c, bad_b, n_b)
        bc, nc, bb, nb = bc + bad_c, nc + n_c, bb + bad_b, nb + n_b
    assert np.allclose(test.cs, expected)
    low, high = test.confidence_interval(0.05)
    assert low < test.effect_estimate() < high


def test_weights_favour_the_regressions_worth_rolling_back() -> None:
    """The mixture's weight sits mostly on x1.15 to x6, spaced evenly in log(log(ratio)), with two
    light alternatives for broken releases; "both" splits the weight between the two sides."""
    ratios, log_weights = grid("increase")
    weights = np.exp(log_weights)
    core = (ratios >= 1.15 - 1e-9) & (ratios <= 6 + 1e-9)
    assert weights[core].sum() > 0.95 and ratios.max() == 20.0
    steps = np.diff(np.log(np.log(ratios[core])))
    assert np.allclose(steps, steps[0])
    both, log_both = grid("both")
    assert math.isclose(float(np.exp(log_both).sum()), 1.0)
    assert math.isclose(float(np.exp(log_both[both < 1]).sum()), 0.5)


def test_common_events_are_counted_with_the_hypergeometric_variance() -> None:
    """When bad events are no rarity (requests slower than a median edge), the canary's share of
    them varies less than a binomial share: the same data weigh more than with dispersion off,
    and the stream's own dispersion estimate on healthy data stays near 1, not near the factor."""
    rng = np.random.default_rng(11)
    corrected, plain = CountStream(), CountStream(dispersion=False)
    corrected.seed_dispersion(59.0, 59.0)
    for _ in range(40):
        n = 1000
        row = (rng.binomial(n, 0.46), n, rng.binomial(n, 0.4), n)
        corrected.update(*row)
        plain.update(*row)
    assert corrected.log_e_value > plain.log_e_value + 1.0
    pearson, dof = corrected.disp
    assert 0.6 < pearson / dof < 1.5


def test_common_events_keep_false_rejections_under_alpha() -> None:
    """Under the null, with 40 % of requests 'bad' in both arms (the worst case the finite-population
    factor changes), 400 seeded runs of 60 polls cross 1/0.05 at most 5 % of the time (within the
    rate's binomial upper bound)."""
    rng = np.random.default_rng(12)
    crossed = 0
    runs = 400
    for _ in range(runs):
        test = CountStream()
        test.seed_dispersion(59.0, 59.0)
        for _ in range(60):
            n_c, n_b = rng.poisson(300), rng.poisson(300)
            test.update(rng.binomial(n_c, 0.4), n_c, rng.binomial(n_b, 0.4), n_b)
            if test.log_e_value >= math.log(1 / 0.05):
                crossed += 1
                break
    assert crossed <= stats.binom.ppf(0.99, runs, 0.05)


def test_detector_is_the_weighted_shiryaev_roberts_statistic() -> None:
    """The late-onset detector equals sum_k w_k R_t(k) with R_t = (1 + R_{t-1}) LR_t, computed here
    from scipy's binomial pmf, and a state saved with the former CUSUM key still loads."""
    test = CountStream(dispersion=False)
    data = [(1, 200, 3, 210), (0, 190, 2, 220), (6, 180, 1, 205), (7, 200, 1, 200)]
    for row in data:
        test.update(*row)
    _, log_weights = grid("increase")
    expected = 0.0
    for rho, weight in zip(test.alt, np.exp(log_weights), strict=True):
        r = 0.0
        for bad_c, n_c, bad_b, n_b in data:
            theta0 = n_c / (n_c + n_b)
            theta = rho * n_c / (rho * n_c + n_b)
            lr = stats.binom.pmf(bad_c, bad_c + bad_b, theta) / stats.binom.pmf(bad_c, bad_c + bad_b, theta0)
            r = (1 + r) * lr
        expected += weight * r
    assert math.isclose(test.log_detector, math.log(expected), rel_tol=1e-9)
    old = test.to_state()
    old["log_cusum"] = old.pop("log_sr")
    resumed = CountStream(dispersion=False)
    resumed.load_state(old)
    assert math.isclose(resumed.log_detector, test.log_detector)


def _whole_bake_evidence(ratio: float, events: float, intervals: int, *, two_sample: bool) -> float:
    """The oracle's expected log likelihood ratio over the bake at ``ratio``, from scipy's
    relative entropy: two samples of ``events`` bad events each under the null (the canary's share
    of all bad events is binomial), or one sample of ``events`` expected at the objective."""
    if two_sample:
        share = ratio / (1 + ratio)
        per_event = float(rel_entr(share, 0.5) + rel_entr(1 - share, 0.5))
        return intervals * events * (1 + ratio) * per_event
    return intervals * events * float(ratio * math.log(ratio) - ratio + 1)


@pytest.mark.parametrize("two_sample", [True, False])
def test_bake_span_bets_only_on_effects_the_bake_can_show(two_sample: bool) -> None:
    """At 0.6 errors per interval an hour cannot show x1.15: the span starts where the whole bake's
    expected evidence reaches half the threshold (checked against scipy's relative entropy), and
    the evidence at the new floor is what the rule asks for."""
    log_threshold = math.log(1 / (0.75 * 0.01))
    low, high = bake_span(0.6, 120, log_threshold, two_sample=two_sample)
    assert low > SPAN[0] and 2 * low <= high <= SPAN[1]
    need = SPAN_FLOOR_SHARE * log_threshold
    assert _whole_bake_evidence(low, 0.6, 120, two_sample=two_sample) == pytest.approx(need, rel=0.02)
    assert _whole_bake_evidence(low / 1.02, 0.6, 120, two_sample=two_sample) < need


@pytest.mark.parametrize("two_sample", [True, False])
def test_bake_span_stops_where_a_few_polls_decide_anyway(two_sample: bool) -> None:
    """At 1.5 errors per interval the span's top is the effect whose expected evidence reaches the
    threshold within SPAN_TOP_INTERVALS intervals (checked against scipy's relative entropy), and
    a larger true effect gains at least that fast on the top alternative: its expected log
    likelihood ratio there exceeds the top's own relative entropy."""
    log_threshold = math.log(1 / (0.75 * 0.01))
    low, top = bake_span(1.5, 120, log_threshold, two_sample=two_sample)
    assert low < 1.25 and 2 * low < top < SPAN[1]
    evidence = _whole_bake_evidence(top, 1.5, SPAN_TOP_INTERVALS, two_sample=two_sample)
    assert evidence == pytest.approx(log_threshold, rel=0.02)
    at_top = _expected_llr(top, top, two_sample=two_sample)
    for truth in (top * 1.5, top * 3):
        assert _expected_llr(top, truth, two_sample=two_sample) > at_top
    # the bets beyond a top well short of x10: light, at 1.6 and 2.6 times it, then x10 and x20
    ratios, log_weights = grid("increase", (1.15, 2.3))
    assert list(ratios[14:]) == pytest.approx([1.6 * 2.3, 2.6 * 2.3, 10.0, 20.0])
    assert np.exp(log_weights[14:]) == pytest.approx(0.3 * np.exp(log_weights[0]))


def _expected_llr(alternative: float, truth: float, *, two_sample: bool) -> float:
    """The expected log likelihood ratio of ``alternative`` against the null, per event the null
    expects, when the effect is ``truth`` (two samples: per baseline event, the canary's share
    binomial; one sample: Poisson at the objective times ``truth``)."""
    if two_sample:
        share, alt = truth / (1 + truth), alternative / (1 + alternative)
        per_event = share * math.log(alt / 0.5) + (1 - share) * math.log((1 - alt) / 0.5)
        return (1 + truth) * per_event
    return truth * math.log(alternative) - (alternative - 1)


def test_bake_span_keeps_the_default_where_small_effects_are_visible_or_nothing_is_known() -> None:
    log_threshold = math.log(1 / (0.75 * 0.01))
    low, top = bake_span(30.0, 60, log_threshold, two_sample=True)  # 1000 req/s at 0.1 %
    assert low == SPAN[0] and top == 2 * SPAN[0]  # x2.3 is decided at the first poll there
    assert bake_span(0.3, 60, log_threshold, two_sample=True)[1] == SPAN[1]  # a quiet one keeps x6
    assert bake_span(0.0, 60, log_threshold, two_sample=True) == SPAN  # no errors before the deploy
    floors = [bake_span(m, 60, log_threshold, two_sample=True)[0] for m in (0.1, 0.5, 2.0, 8.0)]
    assert floors == sorted(floors, reverse=True)  # more traffic, smaller effects worth a bet
    # almost no traffic: the floor moves up, and the span keeps a factor of two above it
    low, high = bake_span(0.005, 60, log_threshold, two_sample=True)
    assert high >= 2 * low


@pytest.mark.parametrize(("requests", "narrowed"), [(30, "floor"), (1500, "top")])
def test_a_narrower_span_is_still_valid_under_the_null(requests: int, narrowed: str) -> None:
    """The span is fixed before the canary's first interval, so the mixture stays an e-process:
    healthy canaries peeked at every poll cross 1/alpha no more often than alpha, whether the span
    lost its bottom (a quiet service) or its top (a busy one)."""
    rng = np.random.default_rng(21)
    alpha, runs = 0.05, 600
    span = bake_span(requests * 0.02, 60, math.log(1 / alpha), two_sample=True)
    assert span[0] > 1.3 if narrowed == "floor" else span[1] < 3
    alarms = sum(
        _first_crossing(
            _with_history(CountStream(span=span)), rng, 0.02, 0.02, requests, requests, 60, 1 / alpha
        )
        is not None
        for _ in range(runs)
    )
    assert _under_alpha(alarms, runs, alpha), alarms


def test_prior_dispersion_raises_the_whole_factor_or_only_its_excess() -> None:
    """The 75 % upper bound is scipy's chi-square quantile. One sample: on the whole factor. Two
    samples: on the excess over 1 only, so a window without bursts gives exactly 1 while a bursty
    one (factor 8.5, as 30 errors per interval under gamma bursts with k = 4) is raised as far as
    its excess is uncertain."""
    dof = 59.0
    raise_by = dof / stats.chi2.ppf(0.25, dof)
    assert prior_dispersion(dof, dof, excess_only=False) == pytest.approx(raise_by)
    assert prior_dispersion(dof, dof, excess_only=True) == 1.0
    assert prior_dispersion(0.7 * dof, dof, excess_only=True) == 1.0  # never below a binomial
    assert prior_dispersion(8.5 * dof, dof, excess_only=True) == pytest.approx(1 + 7.5 * raise_by)
    assert prior_dispersion(8.5 * dof, dof, excess_only=False) == pytest.approx(8.5 * raise_by)


@pytest.mark.parametrize("objective", [None, 0.01])
def test_a_measured_window_raises_only_the_excess_an_assumed_one_all(objective: float | None) -> None:
    """One rule for both kinds of stream: a window without bursts seeds a factor of exactly 1 (no
    count varies less than a binomial), a bursty one its excess at the 75 % bound; a window only
    assumed (no history yet) keeps the whole factor's bound, about 1.5 for ten intervals."""
    quiet, bursty, assumed = (CountStream(objective=objective) for _ in range(3))
    quiet.seed_dispersion(59.0, 59.0)
    bursty.seed_dispersion(4 * 59.0, 59.0)
    assumed.seed_dispersion(10.0, 10.0, measured=False)
    assert quiet.prior_phi == 1.0 and quiet.phi == 1.0
    assert bursty.prior_phi == pytest.approx(1 + 3 * 59 / stats.chi2.ppf(0.25, 59))
    assert assumed.prior_phi == pytest.approx(10 / stats.chi2.ppf(0.25, 10))


def test_own_dispersion_replaces_a_shock_inflated_prior_early_but_cautiously() -> None:
    """Shocks that hit both versions make the window before look very bursty (a factor of 60)
    while the canary's share of the errors is plain binomial. The stream's own estimate may take
    over from MIN_OWN_DOF intervals, at its 99 % bound (scipy's chi-square) until SURE_OWN_DOF,
    then at its 95 % bound; before MIN_OWN_DOF it keeps the prior."""
    rng = np.random.default_rng(5)
    stream = CountStream()
    stream.seed_dispersion(60.0 * 59, 59.0)
    prior = stream.prior_phi
    assert prior is not None and prior > 60
    seen = []
    for _ in range(SURE_OWN_DOF + 3):
        stream.update(rng.binomial(2000, 0.01), 2000, rng.binomial(2000, 0.01), 2000)
        pearson, dof = stream.disp
        seen.append((dof, stream.phi, pearson))
    for dof, phi, pearson in seen:
        if dof < MIN_OWN_DOF:
            assert phi == prior
        else:
            level = 0.01 if dof < SURE_OWN_DOF else 0.05
            assert phi == pytest.approx(max(1.0, min(prior, pearson / stats.chi2.ppf(level, dof))))
    assert seen[-1][1] < prior / 10  # binomial splits: the factor comes down toward the 1 they need


def _bursty_history(stream: CountStream, events: float = 30.0) -> CountStream:
    """A window before the deploy whose errors burst like gamma noise with k = 4 at ``events``
    per interval (factor 1 + 30/4 = 8.5)."""
    stream.seed_dispersion(8.5 * 119, 119.0, events=events)
    return stream


def test_a_surge_scales_the_dispersion_excess_beyond_twice_the_usual_events() -> None:
    """Up to SURGE times the volume the window saw per interval the factor stays; beyond, its
    excess over 1 grows in proportion (continuously from SURGE); without a measured volume every
    interval keeps the factor. Two samples measure the volume in bad events, one in requests."""
    stream = _bursty_history(CountStream())
    phi = stream.phi
    assert phi > 8.5
    assert stream.phi_at(0.0) == stream.phi_at(SURGE * 30.0) == phi
    assert stream.phi_at(SURGE * 30.0 + 1e-9) == pytest.approx(phi)
    assert stream.phi_at(150.0) == pytest.approx(1 + (phi - 1) * (150 / 30 - SURGE + 1))
    unmeasured = CountStream()
    unmeasured.seed_dispersion(8.5 * 119, 119.0)
    assert unmeasured.phi_at(1e6) == unmeasured.phi
    one_sample = CountStream(objective=0.01)
    one_sample.seed_dispersion(8.5 * 119, 119.0, events=30.0, requests=3000.0)
    assert one_sample.prior_weight == 3000.0
    twin = CountStream(objective=0.01)
    twin.seed_dispersion(8.5 * 119, 119.0)  # the same factor, no volume
    for stream_ in (one_sample, twin):
        stream_.update(30, 3000)  # an ordinary interval: the same evidence
    np.testing.assert_array_equal(one_sample.log_e, twin.log_e)
    for stream_ in (one_sample, twin):
        stream_.update(300, 30_000)  # ten times the traffic: the factor grows, the evidence shrinks
    surge = one_sample.phi_at((math.sqrt(30_000) - 1) ** 2)
    assert surge == pytest.approx(1 + (phi - 1) * ((math.sqrt(30_000) - 1) ** 2 / 3000 - SURGE + 1))
    assert np.all(np.abs(one_sample.log_e) < np.abs(twin.log_e))


def test_the_surge_weight_sees_the_events_not_their_split() -> None:
    """What scales the factor may depend on the interval's bad events, which the test conditions
    on, and on the past, never on the canary's share of them; a regression's own extra events are
    taken out at the effect estimated so far, and a quiet service's chance pair is no surge."""
    judged: list[float] = []

    class Spy(CountStream):
        def _update_two_sample(self, *args: float) -> None:
            judged.append(args[4])  # the factor this interval is judged with
            super()._update_two_sample(*args)

    for split in ((240, 19), (19, 240), (130, 129)):  # one surge, three ways to share it
        spy = _bursty_history(Spy())
        for c, b in ((30, 22), (25, 34), (40, 28), (27, 31), (33, 20)):  # the same past each time
            spy.update(c, 1000, b, 1000)
        spy.update(*(float(x) for x in (split[0], 1000, split[1], 1000)))
    surge_factors = judged[5::6]
    assert surge_factors[0] == surge_factors[1] == surge_factors[2] > judged[4]
    half = (math.sqrt(200) - 1) ** 2 / 2
    assert _surge_weight(200, 1000, 1000, 1.0) == pytest.approx(half)
    assert _surge_weight(300, 1000, 1000, 2.0) == pytest.approx(half)  # x2 on the canary's half
    assert _surge_weight(300, 1000, 1000, 0.5) == _surge_weight(300, 1000, 1000, 1.0)
    assert _surge_weight(2, 1000, 1000, 1.0) < 0.1


def test_shared_surges_on_bursty_errors_keep_false_rollbacks_under_alpha() -> None:
    """Healthy deploys of a service whose errors burst per version (gamma, k = 4, 30 errors per
    interval) and, one interval in ten, surge x3-x10 on both versions at once (a shared
    dependency failing). The window before cannot tell the surges from bursts; the stream's own
    estimate takes over and averages them in. Judged with that average factor, a surge's bursts
    (a factor of 20-80 on those intervals) crossed the bars (alpha split between the e-process
    and the late-onset detector, as a check splits it) in 25 of 300 runs; scaled with the surge,
    the rate stays under alpha."""
    rng = np.random.default_rng(11)
    alpha, runs, polls, n = 0.01, 300, 60, 3000

    def errors(size: int) -> tuple[np.ndarray, np.ndarray]:
        shock = np.where(rng.random(size) < 0.1, rng.uniform(3, 10, size), 1.0)
        rate = 0.01 * shock
        return (
            rng.poisson(n * rate * rng.gamma(4.0, 0.25, size)),
            rng.poisson(n * rate * rng.gamma(4.0, 0.25, size)),
        )

    alarms = 0
    for _ in range(runs):
        history, _unused = errors(120)
        pearson, dof = dispersion_sum([RatioCounts(float(b), float(n)) for b in history])
        stream = CountStream()
        stream.seed_dispersion(pearson, dof, events=float(history.mean()))
        canary, baseline = errors(polls)
        for c, b in zip(canary, baseline, strict=True):
            stream.update(float(c), n, float(b), n)
            if stream.e_value >= 2 / alpha or stream.log_detector >= math.log(2 * polls / alpha):
                alarms += 1
                break
    assert _under_alpha(alarms, runs, alpha), alarms


def test_a_lopsided_surge_cannot_hide_its_own_residual() -> None:
    """The effect a residual is measured around weighs this interval no more than a typical one.
    Ten even intervals of 20 errors, then a surge of 259 split 240 to 19: fitted at full weight,
    the surge would pull the effect to x2.9 and leave itself a residual of about 46; with its
    weight capped at a typical interval's, the effect stays near x1.2 and the residual is the
    lopsided split it is."""
    stream = CountStream()
    for _ in range(10):
        stream.update(10, 1000, 10, 1000)
    before = stream.disp[0]
    stream.update(240, 1000, 19, 1000)
    weight = 20 / 259
    total = 10_000 + weight * 1000
    rho = ((100 + weight * 240 + 0.5) / total) / ((100 + weight * 19 + 0.5) / total)
    share = rho / (rho + 1)
    factor = (2000 - 259) / 1999
    expected = (240 - 259 * share) ** 2 / (259 * share * (1 - share) * factor)
    assert stream.disp[0] - before == pytest.approx(expected)
    assert expected > 100


def test_effective_dof_counts_heavy_tailed_residuals_for_less() -> None:
    """Satterthwaite: a sum of dof residuals that each scatter `spread` times their squared mean
    is worth 2 * dof / spread degrees of freedom, never more than dof; the window's factor is
    raised at the chi-square bound for those (scipy's)."""
    assert effective_dof(59.0) == effective_dof(59.0, 1.5) == 59.0
    assert effective_dof(59.0, 20.0) == pytest.approx(5.9)
    nu = 5.9
    heavy = prior_dispersion(8.5 * 59, 59.0, excess_only=True, spread=20.0)
    assert heavy == pytest.approx(1 + 7.5 * nu / stats.chi2.ppf(0.25, nu))
    assert heavy > prior_dispersion(8.5 * 59, 59.0, excess_only=True) > 8.5
    assert prior_dispersion(59.0, 59.0, excess_only=True, spread=20.0) == 1.0  # no excess to raise


def _binomial_splits(stream: CountStream, rng: np.random.Generator, intervals: int) -> list[float]:
    """Feed spike-free intervals of 3,000 requests at 1 % per version; the factor after each."""
    seen = []
    for _ in range(intervals):
        stream.update(rng.binomial(3000, 0.01), 3000, rng.binomial(3000, 0.01), 3000)
        seen.append(stream.phi)
    return seen


def test_after_a_heavy_tailed_window_the_own_estimate_waits_for_what_it_is_worth() -> None:
    """A window whose factor of 20 came from a few spikes (spread 24): spike-free intervals of
    the bake replace it only once they are worth MIN_OWN_DOF degrees of freedom (3 * 24 / 2 = 36
    intervals), and then at the 99 % bound of the chi-square with that many. Seeded as a
    chi-square's (spread 2), six of the same intervals halve it."""
    rng = np.random.default_rng(2)
    heavy, plain = CountStream(), CountStream()
    heavy.seed_dispersion(20.0 * 119, 119.0, events=30.0, spread=24.0, typical_rate=0.01)
    plain.seed_dispersion(20.0 * 119, 119.0, events=30.0, typical_rate=0.01)
    prior = heavy.prior_phi
    assert prior is not None and plain.prior_phi is not None and prior > plain.prior_phi
    seen = _binomial_splits(heavy, rng, 40)
    assert seen[:35] == [prior] * 35  # 35 intervals: dof 34, worth 2.8
    pearson, dof = heavy.disp
    nu = dof * 2 / 24
    assert heavy.phi == pytest.approx(max(1.0, pearson / (dof * stats.chi2.ppf(0.01, nu) / nu)))
    assert heavy.phi < prior
    assert _binomial_splits(plain, np.random.default_rng(2), 6)[-1] < plain.prior_phi / 2


def test_surges_on_both_versions_show_the_window_s_tails_were_shared() -> None:
    """After a heavy-tailed window a surge is learned from, not judged (an infinite factor), and
    the own estimate waits. Surges of the bake are counted as hitting both versions or one (each
    against the window's typical rate): two that hit both, and more than hit one, make the tails
    a chi-square's again; surges that hit one version alone bring the window's caution back."""
    rng = np.random.default_rng(4)
    stream = CountStream()
    stream.seed_dispersion(20.0 * 119, 119.0, events=30.0, spread=24.0, typical_rate=0.01)
    prior = stream.prior_phi
    surge = 4 * SURGE * 30.0
    _binomial_splits(stream, rng, 6)
    assert stream.surges == [0, 0] and stream.tail_spread == 24.0
    assert stream.phi == prior and math.isinf(stream.phi_at(surge))
    stream.update(150, 3000, 140, 3000)  # a shared dependency fails
    stream.update(120, 3000, 160, 3000)
    assert stream.surges == [2, 0] and stream.tail_spread == 2.0
    assert stream.phi < prior / 2 and math.isfinite(stream.phi_at(surge))  # 7 dof, a chi-square's
    stream.update(150, 3000, 30, 3000)  # the canary's pod restarts
    assert stream.surges == [2, 1] and stream.tail_spread == 2.0
    stream.update(25, 3000, 160, 3000)  # and the baseline's
    assert stream.surges == [2, 2] and stream.tail_spread == 24.0 and math.isinf(stream.phi_at(surge))
    restored = CountStream()
    restored.load_state(stream.to_state())
    assert restored.surges == [2, 2] and restored.prior_spread == 24.0 and restored.prior_rate == 0.01
    assert restored.phi == stream.phi
    legacy = CountStream()
    newer = ("prior_spread", "prior_rate", "surges")
    legacy.load_state({k: v for k, v in stream.to_state().items() if k not in newer})
    assert legacy.prior_spread == 2.0 and legacy.prior_rate is None and legacy.surges == [0, 0]
    assert math.isfinite(legacy.phi_at(surge))


def test_dispersion_spread_tells_spikes_from_bursts_and_from_small_counts() -> None:
    """About 2 (the chi-square's) for binomial counts, busy or quiet (0.6 errors per interval: the
    binomial's own small-count scatter is taken out) and for gamma bursts; far above it when one
    interval in twenty spikes x2-x6."""
    rng = np.random.default_rng(6)

    def window(n: int, rate: np.ndarray) -> list[RatioCounts]:
        return [RatioCounts(float(b), float(n)) for b in rng.binomial(n, np.minimum(rate, 1.0))]

    ones = np.ones(120)
    spikes = np.where(rng.random(120) < 0.05, rng.uniform(2, 6, 120), 1.0)
    spikes[:3] = (2.5, 4.0, 5.5)  # at least a few, as an hour of such a service shows
    assert dispersion_spread(window(3000, 0.01 * ones)) < 3
    assert dispersion_spread(window(60, 0.01 * ones)) < 3
    assert dispersion_spread(window(3000, 0.01 * rng.gamma(4.0, 0.25, 120))) < 4
    assert dispersion_spread(window(3000, 0.01 * spikes)) > 10
    assert dispersion_spread(window(3000, 0.01 * ones)[:5]) == 2.0  # too few intervals to tell


def test_spikes_of_one_version_keep_false_rollbacks_under_alpha() -> None:
    """Healthy deploys of a service where each version's errors alone spike x2-x6 in one interval
    of twenty (a pod restarting): 30 errors per interval, the window before showing the
    baseline's own spikes. Counting a spike-free stretch of the bake as a chi-square's let the
    own estimate take over after three intervals and roll back the next spike: the bars (alpha
    split between the e-process and the late-onset detector, as a check splits it) were crossed
    in 86 of 300 runs. Counted for what they are worth, with surges only learned from, 2."""
    def alarms(spread_aware: bool) -> int:
        rng = np.random.default_rng(13)
        alpha, runs, polls, n = 0.01, 300, 60, 3000

        def errors(size: int) -> np.ndarray:
            spike = np.where(rng.random(size) < 0.05, rng.uniform(2, 6, size), 1.0)
            return rng.poisson(n * 0.01 * spike)

        count = 0
        for _ in range(runs):
            history = [RatioCounts(float(b), float(n)) for b in errors(120)]
            pearson, dof = dispersion_sum(history)
            spread = dispersion_spread(history) if spread_aware else 2.0
            stream = CountStream()
            stream.seed_dispersion(
                pearson,
                dof,
                events=sum(c.bad for c in history) / len(history),
                spread=spread,
                typical_rate=float(np.median([c.bad for c in history])) / n,
            )
            for c, b in zip(errors(polls), errors(polls), strict=True):
                stream.update(float(c), n, float(b), n)
                if stream.e_value >= 2 / alpha or stream.log_detector >= math.log(2 * polls / alpha):
                    count += 1
                    break
        return count

    assert _under_alpha(alarms(True), 300, 0.01)
    assert alarms(False) > 20


def test_the_bake_s_own_dispersion_is_a_floor_under_a_quiet_window() -> None:
    """An hour without a spike seeds a factor of 1; when the canary's share then varies far more
    than a binomial's (a spike of each version), the factor follows the stream's own estimate at
    its 95 % lower bound (scipy's chi-square), from the first degree of freedom. Splits that vary
    as a binomial's leave it at 1."""
    rng = np.random.default_rng(8)
    quiet = CountStream()
    quiet.seed_dispersion(119.0, 119.0, events=30.0, typical_rate=0.01)
    assert quiet.prior_phi == 1.0
    _binomial_splits(quiet, rng, 8)
    assert quiet.phi == 1.0
    spiky = CountStream()
    spiky.seed_dispersion(119.0, 119.0, events=30.0, typical_rate=0.01)
    spiky.update(30, 3000, 31, 3000)
    spiky.update(150, 3000, 30, 3000)  # the canary's pod restarts: dof 1 already
    pearson, dof = spiky.disp
    assert dof == 1 and spiky.phi == pytest.approx(pearson / stats.chi2.ppf(0.95, 1)) and spiky.phi > 5
    spiky.update(28, 3000, 170, 3000)
    spiky.update(33, 3000, 29, 3000)
    pearson, dof = spiky.disp
    assert spiky.phi == pytest.approx(pearson / stats.chi2.ppf(0.95, dof)) and spiky.phi > 5


def test_a_spike_alone_is_one_version_far_above_its_typical_events_after_a_spiky_window() -> None:
    """Exactly one version above 1.5 times the window's typical bad events at a lower Poisson
    bound, after a window that spread heavily with few such intervals; not after an ordinary
    window, nor one where many intervals ran high (the bulk of bursty errors, not spikes). The
    canary's bar rises with the effect already estimated, so a regression the stream has seen for
    a while stops counting as a spike."""

    def seeded(spread: float, high: float | None) -> CountStream:
        stream = CountStream()
        stream.seed_dispersion(
            600.0, 59.0, events=30.0, requests=3000.0, spread=spread, typical_rate=0.01, high=high
        )
        return stream

    assert not seeded(20.0, None).spike_alone(90, 3000, 30, 3000)  # no share measured
    assert not seeded(CHI2_SPREAD, 0.05).spike_alone(90, 3000, 30, 3000)  # an ordinary window
    assert not seeded(20.0, 0.3).spike_alone(90, 3000, 30, 3000)  # the bulk runs high
    stream = seeded(20.0, 0.05)
    assert stream.spike_alone(90, 3000, 30, 3000) and stream.spike_alone(30, 3000, 90, 3000)
    assert not stream.spike_alone(90, 3000, 90, 3000)  # both: a shared surge
    assert not stream.spike_alone(33, 3000, 30, 3000)  # neither
    assert stream.spike_alone(600, 3000, 150, 3000)  # a spike on top of a shock
    assert not stream.spike_alone(300, 3000, 250, 3000)  # a shock alone
    for _ in range(20):
        stream.update(90, 3000, 30, 3000)
    assert stream.effect_estimate() > 2.5
    assert not stream.spike_alone(90, 3000, 30, 3000)
    assert stream.spike_alone(30, 3000, 90, 3000)  # the baseline's spike still counts
    restored, legacy = CountStream(), CountStream()
    restored.load_state(stream.to_state())
    assert restored.prior_high == 0.05 and restored.spike_alone(30, 3000, 90, 3000)
    legacy.load_state({k: v for k, v in stream.to_state().items() if k != "prior_high"})
    assert legacy.prior_high is None and not legacy.spike_alone(30, 3000, 90, 3000)  # as it ran


def test_high_share_counts_the_intervals_far_above_a_typical_rate() -> None:
    bad = np.array([30.0, 31.0, 29.0, 90.0, 200.0])
    total = np.full(5, 3000.0)
    assert high_share(bad, total, 0.01) == pytest.approx(0.4)
    assert high_share(bad[:0], total[:0], 0.01) == 0.0
