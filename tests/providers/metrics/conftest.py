"""Fixtures for the metrics providers: a scripted HTTP server, provider factories, and the live
setup of the integration tests (simulated apps scraped by a real Prometheus)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from providers.metrics.prometheus import PrometheusProvider
from providers.metrics.scrape import ScrapeProvider
from tests.providers.metrics.helpers import RPS, V2_ERROR_RATE, Live, ScriptedServer
from tests.support.prometheus_server import (
    PrometheusMissing,
    PrometheusServer,
    find_binary,
)
from watchdog.clock import SystemClock
from watchdog.demo.simapp import SimulatedApp
from watchdog.metrics import WatchdogMetrics
from watchdog.plugins import AdapterContext


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    await scripted.start()
    yield scripted
    await scripted.stop()


@pytest_asyncio.fixture
async def second_server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    await scripted.start()
    yield scripted
    await scripted.stop()


@pytest.fixture
def metrics() -> WatchdogMetrics:
    return WatchdogMetrics()


@pytest.fixture
def context(metrics: WatchdogMetrics) -> AdapterContext:
    return AdapterContext(metrics=metrics, clock=SystemClock())


@pytest.fixture
def make_prometheus(
    server: ScriptedServer, make_adapter: Callable[..., Any]
) -> Callable[..., PrometheusProvider]:
    """Providers pointed at ``server`` by default; all closed after the test."""

    def make(name: str = "prom", **settings: Any) -> PrometheusProvider:
        settings.setdefault("url", server.url)
        provider: PrometheusProvider = make_adapter(PrometheusProvider, name, **settings)
        return provider

    return make


@pytest.fixture
def make_scrape(make_adapter: Callable[..., Any]) -> Callable[..., ScrapeProvider]:
    def make(*targets: str, name: str = "sidecar", **settings: Any) -> ScrapeProvider:
        provider: ScrapeProvider = make_adapter(
            ScrapeProvider, name, **{"targets": list(targets), **settings}
        )
        return provider

    return make


# --- integration: simulated apps scraped by a real Prometheus ---------------------------------

@pytest.fixture(scope="module")
def prometheus_binary_present() -> Iterator[None]:
    """Fail (never skip) without Prometheus: a skipped integration suite looks like a green one."""
    try:
        find_binary()
    except PrometheusMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(prometheus_binary_present: None) -> AsyncIterator[Live]:
    """checkout v1 (healthy) and v2 (10 % errors) at 200 req/s each, scraped every second.

    Module-scoped: Prometheus takes a few seconds to start and to gather a 5 s window, which the
    tests then share.
    """
    stable = SimulatedApp(service="checkout", version="v1", rps=RPS, error_rate=0.0, seed=1)
    canary = SimulatedApp(
        service="checkout", version="v2", rps=RPS, error_rate=V2_ERROR_RATE, seed=2
    )
    await stable.start()
    await canary.start()
    try:
        async with PrometheusServer([stable.metrics_url, canary.metrics_url]) as prometheus:
            yield Live(stable=stable, canary=canary, prometheus=prometheus)
    finally:
        await canary.stop()
        await stable.stop()
