"""The adapter registry (watchdog.plugins): adapters come from entry points, are validated before any
is registered, and a clash or a broken adapter package names the distributions involved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from watchdog import plugins
from watchdog.config.loader import load_config_text
from watchdog.errors import ConfigError
from watchdog.plugins import Adapter, PluginRegistry


class FakeMetrics:
    """A metrics adapter as a third-party package would ship it."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        endpoint: str

    @classmethod
    def from_settings(cls, name: str, settings: BaseModel, context: Any) -> FakeMetrics:
        return cls()


def fake(kind: str = "metrics", name: str = "fake", dist: str = "acme-watchdog-fake") -> Adapter:
    return Adapter(kind=kind, name=name, factory=FakeMetrics, distribution=dist)


@dataclass
class FakeDist:
    name: str


@dataclass
class FakeEntryPoint:
    """What importlib.metadata.entry_points() yields, reduced to what the registry reads."""

    name: str
    target: Any
    dist: FakeDist | None

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


def with_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == plugins.GROUP
        return list(eps)

    monkeypatch.setattr(plugins, "entry_points", entry_points)


# --- the real registry ------------------------------------------------------------------------


def test_installed_entry_points_register_the_shipped_adapters(registry: PluginRegistry) -> None:
    """This distribution registers at least the adapters the docs and the demo use, under the kinds
    the loader asks for; every one has a Settings model that refuses unknown keys."""
    assert {"prometheus", "scrape"} <= set(registry.types("metrics"))
    assert "http" in registry.types("rollback")
    assert {"slack", "webhook"} <= set(registry.types("notify"))
    assert "generic" in registry.types("source")
    for kind in plugins.KINDS:
        for type_ in registry.types(kind):
            adapter = registry.find(kind, type_)
            assert adapter is not None
            assert adapter.distribution == "rollback-watchdog"
            assert adapter.settings_model.model_config.get("extra") == "forbid", f"{kind}.{type_}"


def test_types_are_sorted_and_find_misses_give_none(registry: PluginRegistry) -> None:
    """`types` lists names in order (for stable messages and schema); an unknown type is None."""
    for kind in plugins.KINDS:
        assert registry.types(kind) == sorted(registry.types(kind))
    assert registry.find("metrics", "no-such-type") is None
    assert registry.types("no-such-kind") == []


# --- a hand-built registry --------------------------------------------------------------------


def test_fake_adapter_is_usable_by_the_loader() -> None:
    """A registry built from any adapter classes drives the loader: the section is validated by the
    adapter's own Settings model, so its unknown keys are refused."""
    registry = PluginRegistry([fake()])
    loaded = load_config_text("providers:\n  f: {type: fake, endpoint: x}\n", "w.yaml", registry, environ={})
    assert loaded.adapter_settings[("providers", "f")].endpoint == "x"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as caught:
        text = "providers:\n  f: {type: fake, endpoint: x, port: 1}\n"
        load_config_text(text, "w.yaml", registry, environ={})
    assert caught.value.problems == ["w.yaml:2: providers.f.port: unknown key"]


def test_duplicate_registration_names_both_distributions() -> None:
    """Two packages registering the same kind and type is refused, naming both distributions."""
    with pytest.raises(ConfigError) as caught:
        PluginRegistry([fake(dist="acme-one"), fake(dist="acme-two")])
    (problem,) = caught.value.problems
    assert "metrics.fake" in problem
    assert "acme-one" in problem and "acme-two" in problem


def test_same_type_under_different_kinds_is_not_a_clash() -> None:
    """`http` may be both a rollback target and a notifier type."""
    registry = PluginRegistry([fake("rollback", "http"), fake("notify", "http")])
    assert registry.types("rollback") == ["http"] and registry.types("notify") == ["http"]


def test_unknown_kind_is_refused_naming_the_distribution() -> None:
    """An entry `metric.fake` (kind misspelt) is refused, listing the kinds that exist."""
    with pytest.raises(ConfigError) as caught:
        PluginRegistry([fake(kind="metric", dist="acme-typo")])
    (problem,) = caught.value.problems
    assert "acme-typo" in problem and "unknown kind 'metric'" in problem


def test_all_problems_reported_together() -> None:
    """Registration is validated as a whole: every clash and bad kind is listed at once."""
    with pytest.raises(ConfigError) as caught:
        PluginRegistry([fake(dist="a"), fake(dist="b"), fake(kind="nope", dist="c"), fake(dist="d")])
    assert len(caught.value.problems) == 3


def test_unknown_and_planned_type_messages(registry: PluginRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A planned type says "not available yet"; any other says "unknown"; both list what is available."""
    monkeypatch.setattr("watchdog.plugins.PLANNED", {"metrics": frozenset({"datadog"})})
    custom = PluginRegistry([fake()])
    assert custom.unknown_type_message("metrics", "datadog") == (
        "metrics type 'datadog' is not available yet in this version of rollback-watchdog (available: fake)"
    )
    unknown = custom.unknown_type_message("metrics", "graphite")
    assert unknown == "unknown metrics type 'graphite' (available: fake)"
    empty = PluginRegistry([]).unknown_type_message("notify", "x")
    assert empty == "unknown notify type 'x' (available: none)"


# --- from entry points ------------------------------------------------------------------------


def test_from_entry_points_duplicate_names_both_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same `metrics.fake` from two installed packages is refused, naming both packages."""
    with_entry_points(
        monkeypatch,
        FakeEntryPoint("metrics.fake", FakeMetrics, FakeDist("acme-one")),
        FakeEntryPoint("metrics.fake", FakeMetrics, FakeDist("acme-two")),
    )
    with pytest.raises(ConfigError) as caught:
        PluginRegistry.from_entry_points()
    (problem,) = caught.value.problems
    assert "acme-one" in problem and "acme-two" in problem


def test_from_entry_points_adapter_that_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken third-party adapter is a ConfigError naming the entry and its package, not a
    traceback, once something uses it."""
    with_entry_points(
        monkeypatch,
        FakeEntryPoint(
            "metrics.broken", ModuleNotFoundError("No module named 'acme_sdk'"), FakeDist("acme-broken")
        ),
    )
    adapter = PluginRegistry.from_entry_points().find("metrics", "broken")
    assert adapter is not None
    with pytest.raises(ConfigError) as caught:
        _ = adapter.settings_model
    (problem,) = caught.value.problems
    assert problem.startswith("adapter metrics.broken from acme-broken failed to load: ")
    assert "acme_sdk" in problem


def test_a_config_naming_a_broken_adapter_is_refused_at_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load failure surfaces as a config problem with the file and line of the provider."""
    with_entry_points(
        monkeypatch,
        FakeEntryPoint(
            "metrics.broken", ModuleNotFoundError("No module named 'acme_sdk'"), FakeDist("acme-broken")
        ),
    )
    text = "providers:\n  prom:\n    type: broken\n    endpoint: http://127.0.0.1:9\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "w.yaml", PluginRegistry.from_entry_points(), environ={})
    (problem,) = caught.value.problems
    assert problem.startswith("w.yaml:3: providers.prom.type: adapter metrics.broken from acme-broken failed")


def test_an_unused_broken_adapter_does_not_stop_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters are imported on first use: a broken package that the config does not name is never
    imported, and the adapters the config names load as usual."""
    loaded: list[str] = []

    class Recording(FakeEntryPoint):
        def load(self) -> Any:
            loaded.append(self.name)
            return super().load()

    with_entry_points(
        monkeypatch,
        Recording(
            "metrics.broken", ModuleNotFoundError("No module named 'acme_sdk'"), FakeDist("acme-broken")
        ),
        Recording("metrics.fake", FakeMetrics, FakeDist("acme")),
    )
    registry = PluginRegistry.from_entry_points()
    assert loaded == [] and registry.types("metrics") == ["broken", "fake"]
    text = "providers:\n  prom:\n    type: fake\n    endpoint: http://127.0.0.1:9\n"
    config = load_config_text(text, "w.yaml", registry, environ={})
    assert loaded == ["metrics.fake"]
    assert config.adapter_settings[("providers", "prom")].model_dump() == {"endpoint": "http://127.0.0.1:9"}


def test_from_entry_points_refuses_an_object_without_the_adapter_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry point whose object lacks Settings or from_settings is refused clearly."""
    with_entry_points(monkeypatch, FakeEntryPoint("notify.odd", object, None))
    adapter = PluginRegistry.from_entry_points().find("notify", "odd")
    assert adapter is not None
    with pytest.raises(ConfigError) as caught:
        adapter.build("odd", FakeMetrics.Settings(endpoint="x"), None)  # type: ignore[arg-type]
    assert caught.value.problems == [
        "adapter notify.odd from <unknown distribution> has no Settings model or from_settings() classmethod"
    ]


def test_from_entry_points_builds_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry `kind.type` registers type under kind, with the distribution's name kept."""
    with_entry_points(monkeypatch, FakeEntryPoint("rollback.fake", FakeMetrics, FakeDist("acme")))
    registry = PluginRegistry.from_entry_points()
    adapter = registry.find("rollback", "fake")
    assert adapter is not None and adapter.distribution == "acme" and adapter.factory is FakeMetrics
