"""RecordingProvider: the MetricsProvider port over one recording. The Watch renders replay tokens
(``check␟part␟{version}``); the version names the arm, the poll's time names the point."""

from __future__ import annotations

from typing import Any

import pytest

from tests.replay.conftest import DESIGN_EXAMPLE
from watchdog.errors import ProviderQueryError
from watchdog.ports import MetricsProvider, Sample
from watchdog.replay import SEP, RecordingProvider, samples, token
from watchdog.templates import render

CHECKS: dict[str, Any] = {
    "errors": {
        "canary": [[30, {"bad": 3, "total": 1500}], [60, {"bad": 2.5, "total": 1480}], [90, None]],
        "baseline": [[30, {"bad": 2, "total": 1510}]],
        "before": [[0, {"bad": 40, "total": 90000}], [-30, {"bad": 1, "total": 1400}]],
    },
    "latency": {
        "canary": [[30, {"0.1": 900, "0.25": 1400, "1": 1490, "+Inf": 1500}]],
        "baseline": [[30, {"0.1": 950, "0.25": 1450, "1": 1505, "+Inf": 1510}]],
    },
    "cpu": {"canary": [[30, 0.41]], "baseline": [[30, 0.39]]},
}


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider(CHECKS, version="v2", baseline_version="v1", created_at=1000.0)


async def ask(provider: RecordingProvider, check: str, part: str, version: str, t: float) -> list[Sample]:
    """What the Watch asks: the token rendered for ``version``, at ``created_at + t``."""
    query = render(token(check, part), {"version": version}, provider.escape)
    return await provider.query(query, at=provider.created_at + t, interval=30)


def test_it_implements_the_metrics_provider_port(provider: RecordingProvider) -> None:
    """It is a MetricsProvider (query, escape, aclose), declares itself immediate, and its escape
    leaves values alone (the token is not a query language)."""
    assert isinstance(provider, MetricsProvider)
    assert provider.immediate is True
    assert provider.escape('v2"}') == 'v2"}'
    assert token("errors", "bad") == f"errors{SEP}bad{SEP}{{version}}"


async def test_ratio_points_answer_bad_and_total_per_arm(provider: RecordingProvider) -> None:
    """`{"bad": 3, "total": 1500}` answers part bad with one unlabelled sample of 3 and total with
    1500; the canary's version reads the canary arm, the baseline's the baseline arm."""
    assert await ask(provider, "errors", "bad", "v2", 30) == [Sample({}, 3.0)]
    assert await ask(provider, "errors", "total", "v2", 30) == [Sample({}, 1500.0)]
    assert await ask(provider, "errors", "bad", "v1", 30) == [Sample({}, 2.0)]
    assert await ask(provider, "errors", "total", "v1", 30) == [Sample({}, 1510.0)]
    assert await ask(provider, "errors", "bad", "v2", 60) == [Sample({}, 2.5)]


async def test_histogram_points_answer_one_sample_per_bucket_edge(provider: RecordingProvider) -> None:
    """Cumulative bucket counts keyed by `le` come back as one sample per edge labelled `le`, as
    PromQL's `sum by (le)` answers, `+Inf` included."""
    got = await ask(provider, "latency", "query", "v2", 30)
    assert got == [
        Sample({"le": "0.1"}, 900.0),
        Sample({"le": "0.25"}, 1400.0),
        Sample({"le": "1"}, 1490.0),
        Sample({"le": "+Inf"}, 1500.0),
    ]
    assert (await ask(provider, "latency", "query", "v1", 30))[-1] == Sample({"le": "+Inf"}, 1510.0)


async def test_gauge_points_answer_one_sample(provider: RecordingProvider) -> None:
    """A number is one unlabelled sample with that value."""
    assert await ask(provider, "cpu", "query", "v2", 30) == [Sample({}, 0.41)]
    assert await ask(provider, "cpu", "query", "v1", 30) == [Sample({}, 0.39)]


async def test_no_point_and_null_are_no_data(provider: RecordingProvider) -> None:
    """No point at the poll's time, a null value, an arm the recording lacks, a check it lacks and
    a version that is neither arm's: all answer [] (no data, the check is blind), never raise."""
    assert await ask(provider, "errors", "bad", "v2", 120) == []
    assert await ask(provider, "errors", "total", "v2", 90) == []
    assert await ask(provider, "cpu", "query", "v2", 60) == []
    assert await ask(provider, "nothing", "query", "v2", 30) == []
    assert await ask(provider, "errors", "bad", "v9", 30) == []


async def test_times_match_within_a_millisecond(provider: RecordingProvider) -> None:
    """The poll grid is computed in floating point; a point answers a poll within 1 ms of it, and
    not beyond."""
    assert await ask(provider, "errors", "bad", "v2", 30.0004) == [Sample({}, 3.0)]
    assert await ask(provider, "errors", "bad", "v2", 29.9991) == [Sample({}, 3.0)]
    assert await ask(provider, "errors", "bad", "v2", 30.002) == []


async def test_before_the_deploy_the_before_arm_answers(provider: RecordingProvider) -> None:
    """Extension: a query for a time at or before the deploy's start reads the `before` arm,
    whichever version it names (the Watch asks for the window before the deploy with the baseline's
    version, or the canary's when there is none)."""
    assert await ask(provider, "errors", "total", "v1", 0) == [Sample({}, 90000.0)]
    assert await ask(provider, "errors", "bad", "v2", -30) == [Sample({}, 1.0)]
    assert await ask(provider, "errors", "bad", "v1", -60) == []
    assert await ask(provider, "cpu", "query", "v1", 0) == []  # no `before` arm: no data


async def test_values_of_the_wrong_shape_are_query_errors(provider: RecordingProvider) -> None:
    """A value that does not fit the part asked (a number for a ratio part, a ratio for a gauge
    given as text) is ProviderQueryError, which blinds the check for that poll; so is a query
    that is not a replay token."""
    with pytest.raises(ProviderQueryError, match="ratio point"):
        await ask(provider, "cpu", "bad", "v2", 30)
    with pytest.raises(ProviderQueryError, match="not a replay query"):
        await provider.query('sum(up{job="x"})', at=1030.0, interval=30)
    with pytest.raises(ProviderQueryError, match="gauge point"):
        samples("0.4", "query")
    with pytest.raises(ProviderQueryError, match="histogram point"):
        samples({"0.1": "many"}, "query")
    with pytest.raises(ProviderQueryError, match="ratio point"):
        samples({"bad": True, "total": 10}, "bad")


async def test_the_design_example_parses_for_every_check_type() -> None:
    """Every point of the DESIGN §6 example answers with samples of the right shape: two ratio
    polls per arm, one histogram poll of four edges and one gauge poll."""
    import json

    data = json.loads(DESIGN_EXAMPLE.read_text())
    provider = RecordingProvider(data["checks"], version="v2", baseline_version="v1")
    for version in ("v1", "v2"):
        for t in (30, 60):
            for part in ("bad", "total"):
                (sample,) = await ask(provider, "errors", part, version, t)
                assert sample.labels == {} and sample.value > 0
        buckets = await ask(provider, "latency", "query", version, 30)
        assert [s.labels["le"] for s in buckets] == ["0.1", "0.25", "1", "+Inf"]
        assert [s.value for s in buckets] == sorted(s.value for s in buckets)
        (cpu,) = await ask(provider, "cpu", "query", version, 30)
        assert 0 < cpu.value < 1
