"""A metrics provider that answers every query with the same number: the smallest complete adapter.

rollback-watchdog finds it through the entry point ``metrics.constant`` (see ``pyproject.toml``) and
uses it like any shipped provider::

    providers:
      fixed: {type: constant, value: 100, labels: {source: example}}

What an adapter needs (README "Writing a provider"):

- ``Settings``: a pydantic model of the adapter's own keys (everything beside ``type``), with
  ``extra="forbid"`` so a misspelt key is a config error naming the key;
- ``from_settings(name, settings, context)``: a classmethod building the port object. ``context``
  carries the daemon's metrics (``poll_latency``, ``provider_errors``) and its clock;
- the port itself, ``watchdog.ports.MetricsProvider``: ``async query(query, *, at, interval)``
  returning a list of ``Sample`` (an empty list means no data), ``escape(value)`` for template
  values, and ``async aclose()``. Failures cross the port only as ``watchdog.errors`` classes:
  ``ProviderUnavailable`` after the adapter's own bounded retries, ``ProviderQueryError`` for a query
  the backend refuses, another ``PermanentError`` for a config the backend refuses (bad key).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from watchdog.plugins import AdapterContext
from watchdog.ports import Sample

__all__ = ["ConstantProvider", "ConstantSettings"]


class ConstantSettings(BaseModel):
    """``providers.<name>`` with ``type: constant``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    value: float = Field(ge=0)
    """The number every query returns (a count per interval for a ratio check)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the one sample."""


class ConstantProvider:
    """A ``MetricsProvider`` whose every answer is ``settings.value``."""

    Settings = ConstantSettings

    def __init__(self, name: str, settings: ConstantSettings) -> None:
        self.name = name
        self.settings = settings
        self.queries: list[tuple[str, float, float]] = []

    @classmethod
    def from_settings(
        cls, name: str, settings: ConstantSettings, context: AdapterContext
    ) -> ConstantProvider:
        return cls(name, settings)

    def escape(self, value: str) -> str:
        """There is no query language to break out of: values go in as they are."""
        return value

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """One sample worth ``value``, whatever the query; remembered for the curious."""
        self.queries.append((query, at, interval))
        return [Sample(labels=dict(self.settings.labels), value=self.settings.value)]

    async def aclose(self) -> None:
        """Nothing to release."""
