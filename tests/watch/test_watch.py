"""The Watch loop in virtual time with fake providers: the same loop replay and the daemon run."""

from __future__ import annotations

import asyncio
import math
import re

from watchdog.clock import VirtualClock
from watchdog.config.models import PolicyConfig
from watchdog.errors import ProviderQueryError, ProviderUnavailable
from watchdog.model import DeployEvent, Deployment, State, Verdict
from watchdog.ports import Sample
from watchdog.testing import FakeMetricsProvider
from watchdog.watch import Watch

POLICY = PolicyConfig.model_validate(
    {
        "name": "p",
        "bake": "5m",
        "interval": "30s",
        "checks": [
            {
                "name": "errors",
                "type": "ratio",
                "provider": "prom",
                "bad": 'sum(increase(req{version="{version}",code=~"5.."}[{interval}]))',
                "total": 'sum(increase(req{version="{version}"}[{interval}]))',
            }
        ],
    }
)


def deployment(**extra: object) -> Deployment:
    event = DeployEvent(
        source="generic", event_id="e1", service="checkout", version="v2", baseline_version="v1"
    )
    fields = {
        "id": "d1",
        "event": event,
        "policy": "p",
        "state": State.BAKING,
        "verdict": Verdict.PENDING,
        "created_at": 1000.0,
        "updated_at": 1000.0,
        **extra,
    }
    return Deployment(**fields)  # type: ignore[arg-type]


def rates(canary_bad: float, baseline_bad: float, total: float = 200):
    def script(query: str, at: float) -> list[Sample]:
        version = re.search(r'version="([^"]+)"', query).group(1)  # type: ignore[union-attr]
        if "5.." in query:
            return [Sample({}, canary_bad if version == "v2" else baseline_bad)]
        return [Sample({}, total)]

    return script


async def run(provider: FakeMetricsProvider, d: Deployment | None = None, polls: list[int] | None = None):
    clock = VirtualClock(1000.0)

    async def on_poll(n, reports, state):
        if polls is not None:
            polls.append(n)

    watch = Watch(
        deployment=d or deployment(),
        policy=POLICY,
        providers={"prom": provider},
        clock=clock,
        stop=asyncio.Event(),
        on_poll=on_poll,
    )
    return await watch.run(), clock, watch


async def test_renders_queries_per_arm_and_polls_on_the_grid() -> None:
    """Each poll queries canary and baseline at created_at + k * interval with {interval} = 30s."""
    provider = FakeMetricsProvider(rates(1, 1))
    decision, clock, _ = await run(provider)
    assert decision is not None and decision.verdict is Verdict.PASS
    times = sorted({at for _, at in provider.queries if at > 1000})
    assert times == [1000.0 + 30 * k for k in range(1, 11)]
    before = sorted({at for _, at in provider.queries if at <= 1000})
    assert before == [1000.0 - 30 * j for j in range(119, -1, -1)]  # the dispersion reference
    polled = [q for q, at in provider.queries if at > 1000]
    assert 'req{version="v2",code=~"5.."}[30s]' in polled[0]
    assert any('version="v1"' in q for q in polled)
    assert all('version="v1"' in q for q, at in provider.queries if at <= 1000)  # baseline before
    assert clock.now() == 1300.0


async def test_a_regression_is_decided_at_the_first_poll_that_crosses() -> None:
    provider = FakeMetricsProvider(rates(20, 1))
    decision, clock, watch = await run(provider)
    assert decision is not None and decision.verdict is Verdict.FAIL
    assert watch.polls == 1 and clock.now() == 1030.0


async def test_provider_outage_blinds_the_check_and_never_fails_it() -> None:
    """ProviderUnavailable on every poll: inconclusive at the end (on_no_data: hold), no rollback."""
    provider = FakeMetricsProvider(lambda q, at: ProviderUnavailable("prom: 503 after 3 attempts"))
    decision, _, _ = await run(provider)
    assert decision is not None and decision.verdict is Verdict.INCONCLUSIVE
    assert "503 after 3 attempts" in decision.reason


async def test_a_bad_query_blinds_the_check_with_the_providers_message() -> None:
    provider = FakeMetricsProvider(lambda q, at: ProviderQueryError("parse error at char 5"))
    decision, _, _ = await run(provider)
    assert decision is not None and "parse error at char 5" in decision.reason


async def test_no_bad_series_means_zero_errors_not_no_data() -> None:
    """PromQL's sum() over no 5xx series is an empty answer: with traffic present it counts as 0."""

    def script(query: str, at: float) -> list[Sample]:
        return [] if "5.." in query else [Sample({}, 200)]

    decision, _, _ = await run(FakeMetricsProvider(script))
    assert decision is not None and decision.verdict is Verdict.PASS


async def test_an_adapter_bug_blinds_the_check_instead_of_killing_the_watch() -> None:
    provider = FakeMetricsProvider(lambda q, at: KeyError("oops"))
    decision, _, _ = await run(provider)
    assert decision is not None and decision.verdict is Verdict.INCONCLUSIVE


async def test_missing_baseline_version_is_blindness_with_a_reason() -> None:
    event = DeployEvent(source="generic", event_id="e1", service="checkout", version="v2")
    decision, _, _ = await run(FakeMetricsProvider(rates(1, 1)), deployment(event=event))
    assert decision is not None and decision.verdict is Verdict.INCONCLUSIVE
    assert "no baseline version known" in decision.reason


async def test_a_resumed_watch_continues_on_the_same_grid_with_its_evidence() -> None:
    """A deployment stored after 4 polls resumes at poll 5, and keeps the evidence it had."""
    provider = FakeMetricsProvider(rates(1, 1))
    first, _, watch = await run(provider)
    assert first is not None
    state = watch.analysis.to_state()
    resumed_from = deployment(polls=4, analysis={"errors": {**state["errors"], "polls": 4}})
    polls: list[int] = []
    provider2 = FakeMetricsProvider(rates(1, 1))
    decision, _, _ = await run(provider2, resumed_from, polls)
    assert polls == [5, 6, 7, 8, 9, 10]
    assert min(at for _, at in provider2.queries) == 1000.0 + 5 * 30


async def test_stop_returns_none_without_a_decision() -> None:
    stop = asyncio.Event()
    stop.set()
    watch = Watch(
        deployment=deployment(),
        policy=POLICY,
        providers={"prom": FakeMetricsProvider(rates(1, 1))},
        clock=VirtualClock(1000.0),
        stop=stop,
    )
    assert await watch.run() is None


def _policy(check: dict[str, object]) -> PolicyConfig:
    return PolicyConfig.model_validate(
        {"name": "p", "bake": "5m", "interval": "30s", "checks": [{"name": "c", "provider": "prom", **check}]}
    )


def _watch(policy: PolicyConfig, provider: FakeMetricsProvider) -> Watch:
    """A Watch of the default deployment under ``policy``, its provider ``prom``, from t = 1000."""
    return Watch(
        deployment=deployment(),
        policy=policy,
        providers={"prom": provider},
        clock=VirtualClock(1000.0),
        stop=asyncio.Event(),
    )


async def test_histogram_series_are_read_by_le_or_datadogs_upper_bound() -> None:
    """Bucket series from Prometheus (`le`) and Datadog (`upper_bound`) both become cumulative
    buckets; a slower canary fails, edges chosen from the pre-deploy window."""

    def script(query: str, at: float) -> list[Sample]:
        slow = 'version="v2"' in query and at > 1000
        label = "le" if at % 60 else "upper_bound"
        fast = 100 if slow else 380
        return [Sample({label: "0.1"}, fast), Sample({label: "0.5"}, 395), Sample({label: "+Inf"}, 400)]

    policy = _policy({"type": "histogram", "query": 'sum by (le) (rate(h{version="{version}"}[1m]))'})
    watch = _watch(policy, FakeMetricsProvider(script))
    decision = await watch.run()
    assert decision is not None and decision.verdict is Verdict.FAIL
    assert watch.analysis.checks["c"].edges == [0.1]  # type: ignore[attr-defined]


async def test_histogram_reference_is_the_per_interval_history_before_the_deploy() -> None:
    """Before its first poll a histogram asks its query at each poll time of the window before the
    deploy (newest first), for the baseline version; the edges come from their sum and
    each edge's dispersion from their variation."""

    def script(query: str, at: float) -> list[Sample]:
        wobble = int(at) % 7
        return [Sample({"le": "0.1"}, 300 + wobble), Sample({"le": "0.5"}, 395), Sample({"le": "+Inf"}, 400)]

    provider = FakeMetricsProvider(script)
    query = 'sum by (le) (h{version="{version}"})'
    policy = _policy({"type": "histogram", "query": query, "before_window": "10m"})
    watch = _watch(policy, provider)
    await watch.run()
    before = [(q, at) for q, at in provider.queries if at <= 1000.0]
    assert [at for _, at in before] == [1000.0 - 30 * j for j in range(20)]
    assert all('version="v1"' in q for q, _ in before)
    check = watch.analysis.checks["c"]
    assert check.reference is not None and check.reference["intervals"] == 20
    assert check.edges == [0.1, 0.5]  # type: ignore[attr-defined]
    assert all(d is not None for d in check.reference["dispersion"])


async def test_ratio_reference_covers_the_default_hour_before_the_deploy() -> None:
    """With the default ``before_window`` (1 h) and 30 s polls a ratio check reads all 120
    intervals before the deploy, not a capped half of them: its dispersion factor rests on 119
    degrees of freedom."""

    def script(query: str, at: float) -> list[Sample]:
        bad = 'code=~"5.."' in query
        return [Sample({}, float(3 + int(at) % 4) if bad else 1000.0)]

    queries = {"bad": 'e{code=~"5..",version="{version}"}', "total": 't{version="{version}"}'}
    policy = _policy({"type": "ratio", **queries})
    provider = FakeMetricsProvider(script)
    watch = _watch(policy, provider)
    await watch.run()
    start = watch.deployment.created_at
    before = sorted({at for _, at in provider.queries if at <= start}, reverse=True)
    assert before == [start - 30 * j for j in range(120)]
    reference = watch.analysis.checks["c"].reference
    assert reference is not None and reference["intervals"] == 120


async def test_a_gauge_against_an_objective_reads_its_drift_before_the_deploy() -> None:
    """compare: slo asks the gauge at each poll time of the hour before the deploy (for the
    baseline version) and keeps that history's autocorrelation; compare: baseline asks nothing
    before the deploy, since one version's history says nothing about two versions' difference."""

    def script(query: str, at: float) -> list[Sample]:
        return [Sample({}, 0.4 + 0.01 * math.sin(at / 300))]

    for compare, asked in (({"compare": "slo", "objective": 0.5}, 120), ({}, 0)):
        provider = FakeMetricsProvider(script)
        policy = _policy({"type": "gauge", "query": 'avg(cpu{version="{version}"})', **compare})
        watch = _watch(policy, provider)
        await watch.run()
        start = watch.deployment.created_at
        before = [(q, at) for q, at in provider.queries if at <= start]
        assert len(before) == asked
        if asked:
            assert all('version="v1"' in q for q, _ in before)
            reference = watch.analysis.checks["c"].reference
            assert reference is not None and reference["autocorrelation"] > 0.9  # a slow sine


async def test_gauge_values_are_averaged_across_series() -> None:
    def script(query: str, at: float) -> list[Sample]:
        level = 0.9 if 'version="v2"' in query else 0.4
        return [Sample({"pod": "a"}, level + 0.01 * (at % 7)), Sample({"pod": "b"}, level)]

    policy = _policy({"type": "gauge", "query": 'avg(cpu{version="{version}"})', "block": "30s"})
    watch = _watch(policy, FakeMetricsProvider(script))
    decision = await watch.run()
    assert decision is not None and decision.verdict is Verdict.FAIL
    assert "vs" in decision.reason
