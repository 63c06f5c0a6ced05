"""Recordings made from real Prometheus data, then replayed.

Three simulated instances of checkout export real metrics (v1 and v3 healthy, v2 failing 30 % of
its requests); a real Prometheus scrapes them every second. A few polls of the ratio check's queries
(and of a latency histogram) are recorded with the PrometheusProvider into the DESIGN §6 format, the
way an operator would capture past deploys for a backtest, and replayed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from providers.metrics.prometheus import PrometheusProvider, PrometheusSettings
from tests.support.prometheus_server import PrometheusMissing, PrometheusServer, find_binary
from watchdog.config.loader import LoadedConfig
from watchdog.demo.simapp import SimulatedApp
from watchdog.ports import Sample
from watchdog.replay import RecordingProvider, replay_recording, to_json_line
from watchdog.templates import render

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

INTERVAL = 2  # seconds between polls; scrapes every second, so each window holds two or three
POLLS = 8
ALPHA = 0.0001  # the healthy deploy's replay must not flake: at most 1 in 10,000 rolls it back
BAD = 'sum(increase(http_requests_total{service="{service}",version="{version}",code=~"5.."}[{interval}]))'
TOTAL = 'sum(increase(http_requests_total{service="{service}",version="{version}"}[{interval}]))'
LATENCY = (
    'sum by (le) (increase(http_request_duration_seconds_bucket{service="{service}",version="{version}"}'
    "[{interval}]))"
)
CHECKS = f"""\
      - name: errors
        type: ratio
        provider: prom
        bad: '{BAD}'
        total: '{TOTAL}'
        critical: true
"""


@dataclass
class Recorded:
    """Recordings of two deploys from the same Prometheus, and the raw histogram answers."""

    failing: dict[str, Any]  # v2 (30 % errors) against v1
    healthy: dict[str, Any]  # v3 against v1, both healthy
    latency: dict[tuple[str, float], list[Sample]]  # (version, t) -> what Prometheus answered


async def record(
    prom: PrometheusProvider, started: float, version: str, baseline: str
) -> tuple[dict[str, Any], dict[tuple[str, float], list[Sample]]]:
    """Poll like a Watch (t = k * INTERVAL after ``started``) and write what came back as §6 points."""
    arms: dict[str, list[list[Any]]] = {"canary": [], "baseline": []}
    latency_points: dict[str, list[list[Any]]] = {"canary": [], "baseline": []}
    raw: dict[tuple[str, float], list[Sample]] = {}
    for k in range(1, POLLS + 1):
        t = k * INTERVAL
        for arm, v in (("canary", version), ("baseline", baseline)):
            values = {"service": "checkout", "version": v, "interval": f"{INTERVAL}s"}
            bad = await prom.query(render(BAD, values, prom.escape), at=started + t, interval=INTERVAL)
            total = await prom.query(render(TOTAL, values, prom.escape), at=started + t, interval=INTERVAL)
            point = None if not total else {"bad": sum(s.value for s in bad), "total": total[0].value}
            arms[arm].append([t, point])
            buckets = await prom.query(
                render(LATENCY, values, prom.escape), at=started + t, interval=INTERVAL
            )
            raw[(v, t)] = buckets
            latency_points[arm].append([t, {s.labels["le"]: s.value for s in buckets} or None])
    deployment = {
        "service": "checkout",
        "environment": "prod",
        "version": version,
        "baseline_version": baseline,
    }
    recording = {"deployment": deployment, "checks": {"errors": arms, "latency": latency_points}}
    return json.loads(json.dumps(recording)), raw  # through JSON, as a file would carry it


@pytest.fixture(scope="module")
def prometheus_binary() -> None:
    """Fail (never skip) without Prometheus: a skipped integration test looks like a green one."""
    try:
        find_binary()
    except PrometheusMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(prometheus_binary: None) -> AsyncIterator[Recorded]:
    apps = [
        SimulatedApp(service="checkout", version="v1", rps=200, error_rate=0.01, seed=11),
        SimulatedApp(service="checkout", version="v2", rps=200, error_rate=0.3, seed=12),
        SimulatedApp(service="checkout", version="v3", rps=200, error_rate=0.01, seed=13),
    ]
    for app in apps:
        await app.start()
    try:
        async with PrometheusServer([app.metrics_url for app in apps]) as server:
            started = time.time()  # "the deploy": every target is up and scraped from here on
            # wait until the last poll's window is in Prometheus (plus a scrape of slack)
            await asyncio.sleep(max(0.0, started + POLLS * INTERVAL + 1.5 - time.time()))
            prom = PrometheusProvider("prom", PrometheusSettings(url=server.url))
            try:
                failing, raw = await record(prom, started, "v2", "v1")
                healthy, raw_healthy = await record(prom, started, "v3", "v1")
            finally:
                await prom.aclose()
            yield Recorded(failing=failing, healthy=healthy, latency={**raw, **raw_healthy})
    finally:
        for app in apps:
            await app.stop()


async def test_recorded_points_are_real_counts(recorded: Recorded) -> None:
    """The recording holds what Prometheus answered: every poll has counts for both arms, about
    rps x interval requests, and the failing version's share of errors is far above the others'."""
    for recording in (recorded.failing, recorded.healthy):
        for arm in ("canary", "baseline"):
            points = recording["checks"]["errors"][arm]
            assert [t for t, _ in points] == [INTERVAL * k for k in range(1, POLLS + 1)]
            for _, point in points:
                assert point is not None and 0.3 * 200 * INTERVAL < point["total"] < 2.5 * 200 * INTERVAL
    failing = recorded.failing["checks"]["errors"]["canary"]
    assert sum(p["bad"] for _, p in failing) / sum(p["total"] for _, p in failing) > 0.15


async def test_replayed_real_data_rolls_back_the_failing_version(
    recorded: Recorded, load: Callable[..., LoadedConfig]
) -> None:
    """v2 against v1 from real scrapes: rolled back within the recording, the check failing at the
    deciding poll. The recording has no window before the deploy, so the first interval only teaches
    the dispersion factor and the next ones count cautiously: not at the first poll."""
    loaded = load(bake=f"{POLLS * INTERVAL}s", interval=f"{INTERVAL}s", checks=CHECKS, alpha=ALPHA)
    result = await replay_recording(loaded, recorded.failing, "live-v2.json")
    assert result["verdict"] == "rollback", result
    assert INTERVAL < result["decided_at"] <= POLLS * INTERVAL
    check = result["checks"][0]
    assert check["verdict"] == "fail" and check["decided_at"] == result["decided_at"]
    json.loads(to_json_line(result))


async def test_replayed_real_data_passes_the_healthy_version(
    recorded: Recorded, load: Callable[..., LoadedConfig]
) -> None:
    """v3 against v1, both healthy: pass at the end of the bake (the last poll, 6 s), with the
    recorded counts as the check's statistics."""
    loaded = load(bake=f"{POLLS * INTERVAL}s", interval=f"{INTERVAL}s", checks=CHECKS, alpha=ALPHA)
    result = await replay_recording(loaded, recorded.healthy, "live-v3.json")
    assert result["verdict"] == "pass", result
    assert result["decided_at"] == POLLS * INTERVAL
    stats = result["checks"][0]["statistics"]
    canary = recorded.healthy["checks"]["errors"]["canary"]
    assert stats["canary"]["total"] == pytest.approx(sum(p["total"] for _, p in canary))
    assert stats["polls"] == POLLS and stats["blind_polls"] == 0


async def test_recorded_histograms_replay_as_prometheus_answered(recorded: Recorded) -> None:
    """A histogram point recorded from `sum by (le)` answers, in replay, the very samples Prometheus
    gave: same `le` labels (`+Inf` included), same cumulative counts."""
    for recording in (recorded.failing, recorded.healthy):
        d = recording["deployment"]
        provider = RecordingProvider(recording["checks"], version=d["version"], baseline_version="v1")
        for version in (d["version"], "v1"):
            for t in range(INTERVAL, POLLS * INTERVAL + 1, INTERVAL):
                got = await provider.query(f"latency\x1fquery\x1f{version}", at=float(t), interval=INTERVAL)
                expected = recorded.latency[(version, t)]
                assert len(expected) == 7  # six edges and +Inf
                assert sorted(got, key=_le) == sorted(expected, key=_le)


def _le(sample: Sample) -> float:
    return float(sample.labels["le"])
