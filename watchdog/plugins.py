"""Adapters found through entry points, so the core never imports ``providers`` by name.

An adapter package declares, in the group ``rollback_watchdog.providers``, entries named
``<kind>.<type>`` (kinds: ``metrics``, ``rollback``, ``notify``, ``source``) whose value is a class
with:

- ``Settings``: a pydantic model of the adapter's own config keys (everything beside ``type``),
  declared with ``extra="forbid"`` so a misspelt key is an error naming the key;
- ``from_settings(name, settings, context)``: a classmethod returning the port object.

Sources take no config section of their own beyond field overrides, so for them ``from_settings``
gets the (possibly empty) ``sources.<name>`` mapping as settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from pydantic import BaseModel

from watchdog.clock import Clock
from watchdog.errors import ConfigError
from watchdog.metrics import WatchdogMetrics

GROUP: Final = "rollback_watchdog.providers"
KINDS: Final = ("metrics", "rollback", "notify", "source")

# Adapter types that a later release brings. Naming one gives a clear "not available yet" error
# instead of "unknown type", so a config written for a newer release fails understandably. Every
# type this release documents is available, so the sets are empty until one is announced.
PLANNED: Final[dict[str, frozenset[str]]] = {
    "metrics": frozenset(),
    "rollback": frozenset(),
    "notify": frozenset(),
    "source": frozenset(),
}


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What the core hands every adapter it builds."""

    metrics: WatchdogMetrics
    clock: Clock


class Adapter:
    """One registered adapter and the distribution that shipped it.

    The adapter's module is imported on first use, not at registration: a daemon that watches
    Prometheus need not import the AWS and Kubernetes SDKs (about two seconds of start-up, paid by
    every CLI call and every restart), and a broken third-party package that the config does not
    name cannot take the daemon down. A module that fails to import, or that lacks the adapter
    interface, is a ConfigError naming the entry and its package wherever it is first used."""

    __slots__ = ("_factory", "_load", "distribution", "kind", "name")

    def __init__(
        self,
        kind: str,
        name: str,
        distribution: str,
        factory: Any = None,
        load: Callable[[], Any] | None = None,
    ) -> None:
        if (factory is None) == (load is None):
            raise ValueError("an Adapter takes either its factory or a function that loads it")
        self.kind = kind
        self.name = name
        self.distribution = distribution
        self._factory = factory
        self._load = load

    def __repr__(self) -> str:
        return f"Adapter({self.kind}.{self.name} from {self.distribution})"

    @property
    def factory(self) -> Any:
        if self._factory is None:
            assert self._load is not None
            entry = f"adapter {self.kind}.{self.name} from {self.distribution}"
            try:
                factory = self._load()
            except Exception as exc:  # a broken third-party package: an error naming it, not a traceback
                raise ConfigError([f"{entry} failed to load: {exc}"]) from exc
            if not hasattr(factory, "Settings") or not hasattr(factory, "from_settings"):
                raise ConfigError([f"{entry} has no Settings model or from_settings() classmethod"])
            self._factory = factory
        return self._factory

    @property
    def settings_model(self) -> type[BaseModel]:
        model: type[BaseModel] = self.factory.Settings
        return model

    def build(self, name: str, settings: BaseModel, context: AdapterContext) -> Any:
        return self.factory.from_settings(name, settings, context)


class PluginRegistry:
    """All adapters, validated before any is registered (no half-applied registration)."""

    def __init__(self, adapters: Iterable[Adapter]) -> None:
        table: dict[tuple[str, str], Adapter] = {}
        problems: list[str] = []
        for adapter in adapters:
            key = (adapter.kind, adapter.name)
            if adapter.kind not in KINDS:
                problems.append(
                    f"adapter {adapter.kind}.{adapter.name} from {adapter.distribution}: "
                    f"unknown kind {adapter.kind!r} (expected one of {', '.join(KINDS)})"
                )
            elif key in table:
                problems.append(
                    f"adapter {adapter.kind}.{adapter.name} is registered twice: by "
                    f"{table[key].distribution} and by {adapter.distribution}"
                )
            else:
                table[key] = adapter
        if problems:
            raise ConfigError(problems)
        self._table = table

    @classmethod
    def from_entry_points(cls) -> PluginRegistry:
        return cls(_adapter_from_entry_point(ep) for ep in entry_points(group=GROUP))

    def types(self, kind: str) -> list[str]:
        return sorted(t for (k, t) in self._table if k == kind)

    def find(self, kind: str, type_: str) -> Adapter | None:
        return self._table.get((kind, type_))

    def unknown_type_message(self, kind: str, type_: str) -> str:
        if type_ in PLANNED.get(kind, frozenset()):
            return (
                f"{kind} type {type_!r} is not available yet in this version of rollback-watchdog "
                f"(available: {', '.join(self.types(kind)) or 'none'})"
            )
        return f"unknown {kind} type {type_!r} (available: {', '.join(self.types(kind)) or 'none'})"


def _adapter_from_entry_point(ep: EntryPoint) -> Adapter:
    kind, _, type_ = ep.name.partition(".")
    dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
    return Adapter(kind=kind, name=type_, distribution=dist, load=ep.load)
