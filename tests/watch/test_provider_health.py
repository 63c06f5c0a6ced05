"""Provider health (issue 6 item 5): every query's outcome recorded per provider, GET /v1/providers,
and one notification when a deployment's checks stay blind past `blind_after`."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from watchdog.actions import Actions
from watchdog.clock import VirtualClock
from watchdog.config.loader import load_config_text
from watchdog.config.models import WatchdogConfig
from watchdog.errors import ProviderUnavailable
from watchdog.health import MonitoredProvider, ProviderHealth
from watchdog.metrics import WatchdogMetrics
from watchdog.model import DeployEvent
from watchdog.plugins import PluginRegistry
from watchdog.ports import NotificationKind, Sample
from watchdog.retry import RetryPolicy
from watchdog.runtime import Runtime
from watchdog.server.app import create_app
from watchdog.store import SqliteStore
from watchdog.supervisor import Supervisor
from watchdog.testing import FakeMetricsProvider, FakeNotifier, FakeRollback


def config(blind_after: str | None) -> WatchdogConfig:
    return WatchdogConfig.model_validate(
        {
            "providers": {"prom": {"type": "prometheus"}},
            "notify": {"slack": {"type": "slack"}},
            "policies": [
                {
                    "name": "p",
                    "bake": "10m",
                    "interval": "30s",
                    "notify": ["slack"],
                    "blind_after": blind_after,
                    "checks": [
                        {
                            "name": "errors",
                            "type": "ratio",
                            "provider": "prom",
                            "bad": "b",
                            "total": "t",
                            "compare": "slo",
                            "objective": 0.01,
                        }
                    ],
                }
            ],
        }
    )


async def bake(cfg: WatchdogConfig, script) -> tuple[FakeNotifier, ProviderHealth, WatchdogMetrics]:
    store = SqliteStore("sqlite:///:memory:")
    await store.open()
    clock, metrics, notifier = VirtualClock(1000), WatchdogMetrics(), FakeNotifier()
    health = ProviderHealth(clock, metrics)
    health.register("prom", "prometheus")
    provider = MonitoredProvider("prom", FakeMetricsProvider(script), health)
    actions = Actions(
        store, {"hook": FakeRollback()}, {"slack": notifier}, clock, metrics, RetryPolicy(attempts=1)
    )
    supervisor = Supervisor(cfg, store, {"prom": provider}, actions, clock, metrics)
    deployment, _ = await supervisor.submit(DeployEvent("generic", "e1", "checkout", "v2", "prod"))
    await asyncio.wait_for(supervisor.watches[deployment.id], 10)
    await store.aclose()
    return notifier, health, metrics


async def test_a_provider_outage_is_notified_once_after_blind_after() -> None:
    """Down for the whole 10-minute bake with blind_after 2m: exactly one BLIND message (at the 4th
    blind poll), then the inconclusive verdict; never a rollback."""

    def down(query: str, at: float):
        return ProviderUnavailable("prom: 503 Service Unavailable after 3 attempts") if at > 1000 else None

    notifier, health, metrics = await bake(config("2m"), down)
    kinds = [n.kind for n in notifier.sent]
    assert kinds == [NotificationKind.BLIND, NotificationKind.INCONCLUSIVE]
    blind = notifier.sent[0]
    assert blind.headline == "blind: checkout's checks (errors) have had no data for 2m"
    assert "503" in blind.checks[0].summary
    status = health.snapshot()[0]
    assert status["status"] == "failing" and status["consecutive_failures"] == 40
    assert (
        metrics.registry.get_sample_value(
            "watchdog_provider_queries_total", {"provider": "prom", "outcome": "error"}
        )
        == 40
    )


async def test_blindness_that_ends_resets_and_blind_after_null_never_notifies() -> None:
    def flaky(query: str, at: float):
        if 1000 < at <= 1000 + 5 * 30:
            return ProviderUnavailable("timeout")
        return [Sample({}, 0 if query == "b" else 500)]

    notifier, health, _ = await bake(config("2m"), flaky)
    assert [n.kind for n in notifier.sent].count(NotificationKind.BLIND) == 1
    assert health.snapshot()[0]["status"] == "ok"
    notifier, _, _ = await bake(config(None), flaky)
    assert NotificationKind.BLIND not in [n.kind for n in notifier.sent]


async def test_providers_route_shows_each_providers_health() -> None:
    registry = PluginRegistry.from_entry_points()
    text = """\
server: {api_tokens: [{name: dash, token: "viewer-token-0123456789", role: viewer}]}
store: {url: "sqlite:///:memory:"}
providers: {prom: {type: prometheus, url: "http://127.0.0.1:9"}}
"""
    runtime = Runtime(load_config_text(text, "w.yaml", registry), registry)
    await runtime.store.open()
    runtime.health.record("prom", "error", 0.1, "connection refused")
    async with TestClient(TestServer(create_app(runtime))) as client:
        r = await client.get("/v1/providers")
        assert r.status == 401
        r = await client.get("/v1/providers", headers={"Authorization": "Bearer viewer-token-0123456789"})
        body = await r.json()
    await runtime.store.aclose()
    assert body["providers"] == [
        {
            "name": "prom",
            "type": "prometheus",
            "status": "failing",
            "queries": 1,
            "last_ok_at": None,
            "last_no_data_at": None,
            "last_error_at": body["providers"][0]["last_error_at"],
            "last_error": "connection refused",
            "consecutive_failures": 1,
        }
    ]
    assert isinstance(runtime.providers["prom"], MonitoredProvider)
