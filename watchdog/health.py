"""How the metrics providers are doing, seen from the core: every query's outcome and latency.

Each provider is wrapped once at start-up (:class:`MonitoredProvider`), so every adapter, a
third-party one included, is measured the same way: ``watchdog_provider_queries_total`` by outcome,
and ``GET /v1/providers`` shows when each last answered and why it last failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from watchdog.clock import Clock
from watchdog.errors import PermanentError, TemporaryError
from watchdog.metrics import WatchdogMetrics
from watchdog.ports import MetricsProvider, Sample


@dataclass
class ProviderStatus:
    name: str
    type: str
    queries: int = 0
    last_ok_at: float | None = None
    last_no_data_at: float | None = None
    last_error_at: float | None = None
    last_error: str = ""
    consecutive_failures: int = 0
    last_outcome: str = "unknown"

    def to_json(self) -> dict[str, Any]:
        status = {"ok": "ok", "no_data": "no_data", "error": "failing"}.get(self.last_outcome, "unknown")
        return {
            "name": self.name,
            "type": self.type,
            "status": status,
            "queries": self.queries,
            "last_ok_at": self.last_ok_at,
            "last_no_data_at": self.last_no_data_at,
            "last_error_at": self.last_error_at,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
        }


@dataclass
class ProviderHealth:
    clock: Clock
    metrics: WatchdogMetrics
    providers: dict[str, ProviderStatus] = field(default_factory=dict)

    def register(self, name: str, type_: str) -> None:
        self.providers[name] = ProviderStatus(name, type_)

    def record(self, name: str, outcome: str, seconds: float, error: str = "") -> None:
        status = self.providers[name]
        now = self.clock.now()
        status.queries += 1
        status.last_outcome = outcome
        if outcome == "error":
            status.last_error_at, status.last_error = now, error
            status.consecutive_failures += 1
        else:
            status.consecutive_failures = 0
            if outcome == "ok":
                status.last_ok_at = now
            else:
                status.last_no_data_at = now
        self.metrics.provider_queries.labels(provider=name, outcome=outcome).inc()
        self.metrics.provider_query_seconds.labels(provider=name).observe(seconds)

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.providers.values()]


class MonitoredProvider:
    """A provider with its outcomes recorded; otherwise the very same object to the Watch."""

    def __init__(self, name: str, inner: MetricsProvider, health: ProviderHealth) -> None:
        self.name, self.inner, self.health = name, inner, health
        self.immediate = getattr(inner, "immediate", False)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        started = time.monotonic()
        try:
            samples = await self.inner.query(query, at=at, interval=interval)
        except (TemporaryError, PermanentError) as exc:
            self.health.record(self.name, "error", time.monotonic() - started, str(exc))
            raise
        except Exception as exc:
            self.health.record(self.name, "error", time.monotonic() - started, repr(exc))
            raise
        self.health.record(self.name, "ok" if samples else "no_data", time.monotonic() - started)
        return samples

    def query_now(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """For an immediate inner provider (see the port): its synchronous answer, recorded."""
        started = time.monotonic()
        try:
            samples: list[Sample] = getattr(self.inner, "query_now")(query, at=at, interval=interval)  # noqa: B009
        except Exception as exc:
            self.health.record(self.name, "error", time.monotonic() - started, str(exc))
            raise
        self.health.record(self.name, "ok" if samples else "no_data", time.monotonic() - started)
        return samples

    def escape(self, value: str) -> str:
        return self.inner.escape(value)

    async def aclose(self) -> None:
        await self.inner.aclose()
