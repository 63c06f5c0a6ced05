"""Fixtures for the config tests: the real adapter registry (from the installed entry points) and
helpers that load a config text and return either the result or the problems it is refused with.
Config texts themselves live in config_texts.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.config.config_texts import NAME
from watchdog.config.loader import LoadedConfig, load_config_text
from watchdog.errors import ConfigError
from watchdog.plugins import PluginRegistry


@pytest.fixture(scope="session")
def registry() -> PluginRegistry:
    """The adapters this checkout registers through its entry points, as `watchdog` itself finds them."""
    return PluginRegistry.from_entry_points()


@pytest.fixture
def load(registry: PluginRegistry) -> Callable[..., LoadedConfig]:
    """Load a config text named ``watchdog.yaml`` with an empty environment unless one is given."""

    def load(text: str, *, environ: Mapping[str, str] | None = None, **kwargs: Any) -> LoadedConfig:
        return load_config_text(text, NAME, registry, environ={} if environ is None else environ, **kwargs)

    return load


@pytest.fixture
def problems(load: Callable[..., LoadedConfig]) -> Callable[..., list[str]]:
    """Load a config text that must be refused; return the problems it is refused with."""

    def problems(text: str, **kwargs: Any) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            load(text, **kwargs)
        assert caught.value.problems, "a ConfigError must list at least one problem"
        return caught.value.problems

    return problems
