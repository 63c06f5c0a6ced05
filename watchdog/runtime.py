"""Everything a running daemon holds, built from a validated config: adapters, store, supervisor.

Built in one place so ``serve``, the demo and the end-to-end tests assemble the daemon the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from watchdog.actions import Actions
from watchdog.clock import Clock, SystemClock
from watchdog.config.loader import LoadedConfig
from watchdog.config.models import SourceConfig
from watchdog.health import MonitoredProvider, ProviderHealth
from watchdog.metrics import WatchdogMetrics
from watchdog.plugins import AdapterContext, PluginRegistry
from watchdog.ports import EventSource, MetricsProvider, Notifier, RollbackTarget
from watchdog.retry import RetryPolicy
from watchdog.store import Store, open_store
from watchdog.supervisor import Supervisor

log = structlog.get_logger("watchdog.runtime")


@dataclass
class Runtime:
    loaded: LoadedConfig
    registry: PluginRegistry
    clock: Clock = field(default_factory=SystemClock)
    metrics: WatchdogMetrics = field(default_factory=WatchdogMetrics)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        config = self.loaded.config
        context = AdapterContext(metrics=self.metrics, clock=self.clock)
        self.health = ProviderHealth(self.clock, self.metrics)
        self.providers: dict[str, MetricsProvider] = {}
        for name, provider in self._build("providers", "metrics", context).items():
            self.health.register(name, config.providers[name].type)
            self.providers[name] = MonitoredProvider(name, provider, self.health)
        self.rollbacks: dict[str, RollbackTarget] = self._build("rollback", "rollback", context)
        self.notifiers: dict[str, Notifier] = self._build("notify", "notify", context)
        self.sources: dict[str, EventSource] = {}
        for type_ in self.registry.types("source"):
            adapter = self.registry.find("source", type_)
            assert adapter is not None
            settings = config.sources.get(type_, SourceConfig())
            self.sources[type_] = adapter.build(type_, settings, context)
        self.store: Store = open_store(config.store.url)
        self.actions = Actions(
            store=self.store,
            rollbacks=self.rollbacks,
            notifiers=self.notifiers,
            clock=self.clock,
            metrics=self.metrics,
            retry=self.retry,
        )
        self.supervisor = Supervisor(
            config=config,
            store=self.store,
            providers=self.providers,
            actions=self.actions,
            clock=self.clock,
            metrics=self.metrics,
        )

    def _build(self, section: str, kind: str, context: AdapterContext) -> dict[str, Any]:
        built: dict[str, Any] = {}
        for name, entry in getattr(self.loaded.config, section).items():
            adapter = self.registry.find(kind, entry.type)
            assert adapter is not None  # the loader refused unknown types
            built[name] = adapter.build(name, self.loaded.adapter_settings[(section, name)], context)
        return built

    async def start(self) -> None:
        await self.store.open()
        await self.supervisor.start()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop watches within ``timeout``, then close adapters and the store."""
        await self.supervisor.shutdown(timeout)
        closable: list[MetricsProvider | RollbackTarget | Notifier] = [
            *self.providers.values(),
            *self.rollbacks.values(),
            *self.notifiers.values(),
        ]
        for adapter in closable:
            try:
                await adapter.aclose()
            except Exception as exc:  # closing must go on for the others
                log.warning("adapter.close_failed", error=repr(exc))
        await self.store.aclose()
