"""Fixtures for the source tests: each source built the way the runtime builds it (from its
``sources.<name>`` section), with no overrides unless a test asks for some."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from watchdog.clock import VirtualClock
from watchdog.config.models import SourceConfig
from watchdog.metrics import WatchdogMetrics
from watchdog.plugins import AdapterContext, PluginRegistry

Build = Callable[..., Any]


@pytest.fixture
def build() -> Build:
    """``build("github", service="deployment.payload.app")``: the source with those settings,
    through the registry and ``from_settings`` as the runtime does."""
    registry = PluginRegistry.from_entry_points()
    context = AdapterContext(metrics=WatchdogMetrics(), clock=VirtualClock())

    def make(name: str, **settings: Any) -> Any:
        adapter = registry.find("source", name)
        assert adapter is not None, f"source {name} is not registered"
        return adapter.build(name, SourceConfig.model_validate(settings), context)

    return make
