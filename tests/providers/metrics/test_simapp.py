"""SimulatedApp: a real exporter whose traffic is known, for the demo and integration tests."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from watchdog.demo.simapp import SimulatedApp, Traffic

LABELS = {"service": "checkout", "version": "v2"}


def count(app: SimulatedApp, code: str) -> float | None:
    return app.registry.get_sample_value("http_requests_total", {**LABELS, "code": code})


def bucket(app: SimulatedApp, le: str) -> float | None:
    return app.registry.get_sample_value(
        "http_request_duration_seconds_bucket", {**LABELS, "le": le}
    )


def test_same_seed_same_traffic() -> None:
    """A seed makes a run repeatable: two apps with one seed generate the same counts."""
    first = SimulatedApp(version="v2", rps=300, error_rate=0.05, seed=11)
    second = SimulatedApp(version="v2", rps=300, error_rate=0.05, seed=11)
    assert first.generate(20) == second.generate(20)
    assert bucket(first, "0.1") == bucket(second, "0.1")


def test_generated_counts_are_what_the_exporter_exposes() -> None:
    """What ``generate`` reports is exactly what the counters and histogram hold."""
    app = SimulatedApp(version="v2", rps=1000, error_rate=0.1, seed=3)
    assert count(app, "200") == 0
    assert count(app, "500") == 0  # both codes exist from the start
    truth = app.generate(5)
    assert 350 < truth.requests < 650  # Poisson(500)
    assert 0 < truth.errors < truth.requests
    assert count(app, "500") == truth.errors
    assert count(app, "200") == truth.requests - truth.errors
    assert bucket(app, "+Inf") == truth.requests
    assert app.traffic == truth


def test_error_rate_and_latency_change_at_runtime() -> None:
    """The demo flips a version to failing: new ``error_rate`` and ``latency_median`` apply to the
    next tick."""
    app = SimulatedApp(version="v2", rps=1000, error_rate=0.0, latency_median=0.02, seed=5)
    healthy = app.generate(3)
    assert healthy.errors == 0
    assert bucket(app, "0.05") == pytest.approx(healthy.requests, rel=0.05)
    app.error_rate = 1.0
    app.latency_median = 3.0
    failing = app.tick()
    assert failing.errors == failing.requests > 0
    assert (bucket(app, "2.5") or 0) - healthy.requests < failing.requests / 2


def test_port_is_unknown_before_start() -> None:
    """Constructing an app binds nothing (no event loop needed); its address exists once started."""
    app = SimulatedApp()
    with pytest.raises(RuntimeError, match="not started"):
        _ = app.url


async def test_serves_metrics_over_http() -> None:
    """``/metrics`` answers the Prometheus text format on a free loopback port."""
    async with SimulatedApp(version="v2", generate_traffic=False, seed=1) as app:
        app.generate(2)
        assert app.metrics_url == f"http://127.0.0.1:{app.port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(app.metrics_url) as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
    assert 'http_requests_total{code="500",service="checkout",version="v2"}' in text
    assert "# TYPE http_request_duration_seconds histogram" in text


async def test_background_traffic_runs_at_about_rps_and_stops() -> None:
    """Started, the app serves about ``rps`` requests per second of wall time; stopped, none."""
    app = SimulatedApp(version="v2", rps=2000, tick=0.02, seed=9)
    await app.start()
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(0.5)
    await app.stop()
    elapsed = asyncio.get_running_loop().time() - started
    served = app.traffic.requests
    assert 0.6 * 2000 * elapsed < served < 1.4 * 2000 * elapsed
    await asyncio.sleep(0.1)
    assert app.traffic.requests == served
    await app.stop()  # twice is fine


async def test_two_apps_get_two_ports() -> None:
    """Port 0 picks a free port per app, so a test can run a stable and a canary side by side."""
    async with SimulatedApp(version="v1") as stable, SimulatedApp(version="v2") as canary:
        assert stable.port != canary.port


def test_traffic_adds_up() -> None:
    """Traffic totals add field by field."""
    assert Traffic(3, 1) + Traffic(4, 2) == Traffic(7, 3)
