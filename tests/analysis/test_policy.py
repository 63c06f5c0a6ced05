"""The policy's verdict: alpha split across checks, critical and non-critical failures, blindness
kept apart from failure."""

from __future__ import annotations

import math

from watchdog.analysis import PolicyAnalysis, RatioCounts
from watchdog.analysis.checks import DETECTOR_SHARE, END_SHARE, SEQUENTIAL_SHARE
from watchdog.config.models import PolicyConfig
from watchdog.model import Verdict


def policy(**extra: object) -> PolicyConfig:
    checks = extra.pop("checks", None) or [
        {"name": "errors", "type": "ratio", "provider": "p", "bad": "b", "total": "t", "critical": True},
        {"name": "timeouts", "type": "ratio", "provider": "p", "bad": "b", "total": "t"},
    ]
    return PolicyConfig.model_validate(
        {"name": "p", "bake": "10m", "interval": "30s", "checks": checks, **extra}
    )


def feed(
    analysis: PolicyAnalysis,
    name: str,
    canary: tuple[float, float],
    baseline: tuple[float, float] | None,
    times: int = 1,
) -> None:
    check = analysis.checks[name]
    if check.reference is None:  # history before the deploy: steady errors, so phi is about 1
        check.set_reference([RatioCounts(3, 600)] * 60)
    for _ in range(times):
        analysis.checks[name].observe(RatioCounts(*canary), RatioCounts(*baseline) if baseline else None)


def test_alpha_is_split_equally_across_checks() -> None:
    """Two checks under alpha 0.01 each get 0.005, split between the sequential test (threshold
    1/(share * 0.005)), the late-onset detector (N/(share * 0.005)) and the end look; the three
    shares add up to the whole."""
    assert math.isclose(SEQUENTIAL_SHARE + DETECTOR_SHARE + END_SHARE, 1.0)
    analysis = PolicyAnalysis(policy(alpha=0.01))
    for check in analysis.checks.values():
        assert check.alpha == 0.005
        assert math.isclose(check.threshold, 1 / (SEQUENTIAL_SHARE * 0.005))
        assert math.isclose(check.detector_threshold, 20 / (DETECTOR_SHARE * 0.005))
        assert math.isclose(check.end_alpha, END_SHARE * 0.005)


def test_a_failing_critical_check_rolls_back_with_its_numbers_in_the_reason() -> None:
    """The reason is the failing check's summary: counts, rates and evidence against threshold."""
    analysis = PolicyAnalysis(policy())
    feed(analysis, "errors", (20, 200), (1, 200), times=3)
    decision = analysis.decide(final=False)
    assert decision.verdict is Verdict.FAIL
    assert "errors 10.00 % vs 0.50 % on 600 vs 600 requests" in decision.reason
    assert f"against a threshold of {1 / (SEQUENTIAL_SHARE * 0.005):,.0f}" in decision.reason
    assert "error ratio x" in decision.reason


def test_non_critical_failures_count_toward_the_policy_threshold() -> None:
    """With failed_checks_to_rollback 2, one failing non-critical check is not enough; two are."""
    checks = [{"name": n, "type": "ratio", "provider": "p", "bad": "b", "total": "t"} for n in ("a", "b")]
    analysis = PolicyAnalysis(policy(checks=checks, failed_checks_to_rollback=2))
    feed(analysis, "a", (20, 200), (1, 200), times=3)
    assert analysis.decide(final=False).verdict is Verdict.PENDING
    feed(analysis, "b", (20, 200), (1, 200), times=3)
    assert analysis.decide(final=False).verdict is Verdict.FAIL


def test_a_dry_run_check_is_reported_but_never_rolls_back() -> None:
    """A check with dry_run: true shows fail in its report, and the policy stays pending."""
    checks = [{"name": "new", "type": "ratio", "provider": "p", "bad": "b", "total": "t", "dry_run": True}]
    analysis = PolicyAnalysis(policy(checks=checks))
    feed(analysis, "new", (20, 200), (1, 200), times=3)
    decision = analysis.decide(final=False)
    assert decision.verdict is Verdict.PENDING
    assert decision.reports[0].verdict is Verdict.FAIL


def test_healthy_bake_passes_at_the_end_and_not_before() -> None:
    analysis = PolicyAnalysis(policy())
    feed(analysis, "errors", (1, 200), (1, 200), times=5)
    feed(analysis, "timeouts", (0, 200), (0, 200), times=5)
    assert analysis.decide(final=False).verdict is Verdict.PENDING
    assert analysis.decide(final=True).verdict is Verdict.PASS


def test_blindness_is_inconclusive_by_default_and_follows_on_no_data() -> None:
    """A check that never saw data: hold → inconclusive, rollback → fail, pass → pass."""
    for on_no_data, expected in (
        ("hold", Verdict.INCONCLUSIVE),
        ("rollback", Verdict.FAIL),
        ("pass", Verdict.PASS),
    ):
        analysis = PolicyAnalysis(policy(on_no_data=on_no_data))
        analysis.checks["errors"].blind("provider prom did not answer")
        feed(analysis, "timeouts", (0, 200), (0, 200))
        decision = analysis.decide(final=True)
        assert decision.verdict is expected, on_no_data
        if expected is not Verdict.PASS:
            assert "provider prom did not answer" in decision.reason


def test_min_requests_keeps_a_low_traffic_check_from_passing() -> None:
    """Fewer events than min_requests at the end of the bake: inconclusive, not pass."""
    checks = [{"name": "e", "type": "ratio", "provider": "p", "bad": "b", "total": "t", "min_requests": 1000}]
    analysis = PolicyAnalysis(policy(checks=checks))
    feed(analysis, "e", (0, 100), (0, 100), times=3)
    assert analysis.decide(final=True).verdict is Verdict.INCONCLUSIVE


def test_nonsense_counts_are_blindness_not_evidence() -> None:
    """NaN, negative counts, more bad than total, and a missing baseline never move the e-value."""
    analysis = PolicyAnalysis(policy())
    check = analysis.checks["errors"]
    for canary, baseline in [
        ((math.nan, 10), (0, 10)),
        ((-1, 10), (0, 10)),
        ((20, 10), (0, 10)),
        ((5, 10), None),
    ]:
        check.observe(RatioCounts(*canary), RatioCounts(*baseline) if baseline else None)
    assert check.stream.e_value == 1.0
    assert check.blind_polls == 4
    assert "no baseline counts" in check.report().summary


def test_slo_check_reports_against_its_objective() -> None:
    checks = [
        {
            "name": "avail",
            "type": "ratio",
            "provider": "p",
            "bad": "b",
            "total": "t",
            "compare": "slo",
            "objective": 0.01,
        }
    ]
    analysis = PolicyAnalysis(policy(checks=checks))
    feed(analysis, "avail", (12, 200), None, times=3)
    decision = analysis.decide(final=False)
    assert decision.verdict is Verdict.FAIL
    assert "against an objective of 1.00 %" in decision.reason


def test_state_round_trip_keeps_counts_and_verdicts() -> None:
    analysis = PolicyAnalysis(policy())
    feed(analysis, "errors", (20, 200), (1, 200), times=3)
    restored = PolicyAnalysis(policy())
    restored.load_state(analysis.to_state())
    assert restored.decide(final=False).reports == analysis.decide(final=False).reports
