"""Third-party providers (issue 6, part 4): a separate package with an entry point in
``rollback_watchdog.providers`` is found, validated and used like a shipped adapter, and two packages
claiming the same name are refused with an error naming both.

The example package (``tests/plugin_example``) is really installed, with pip, but into folders of its
own (``pip install --target``) that are put on the path of this process or of a ``watchdog``
subprocess: the test leaves the virtualenv as it found it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from watchdog.clock import SystemClock
from watchdog.config.loader import load_config_text
from watchdog.errors import ConfigError
from watchdog.metrics import WatchdogMetrics
from watchdog.plugins import AdapterContext, PluginRegistry
from watchdog.ports import MetricsProvider, Sample

EXAMPLE = Path(__file__).parents[1] / "plugin_example"
NAME = "watchdog-example-plugin"
CLASH = "watchdog-example-plugin-clash"

CONFIG = """\
store:
  url: sqlite:///tmp/unused.db
providers:
  fixed: {type: constant, value: 120, labels: {source: example}}
rollback:
  hook: {type: http, url: "https://ci.example/rollback"}
policies:
  - name: checkout-prod
    match: {service: checkout}
    rollback: hook
    checks:
      - name: errors
        type: ratio
        provider: fixed
        bad: 'errors {version}'
        total: 'requests {version}'
"""


@dataclass(frozen=True)
class Installed:
    """Folders each holding one installed distribution (package and ``.dist-info``)."""

    example: Path
    clash: Path


def pip_install(source: Path, target: Path) -> None:
    """``pip install`` ``source`` into ``target``: offline, no dependencies, no build isolation."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The example, and a second distribution that copies it under another name: the same entry
    point ``metrics.constant`` from a different package."""
    root = tmp_path_factory.mktemp("plugins")
    pip_install(EXAMPLE, root / "example")
    clash_source = root / "clash-source"
    shutil.copytree(EXAMPLE, clash_source, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = clash_source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'name = "{NAME}"', f'name = "{CLASH}"'))
    pip_install(clash_source, root / "clash")
    return Installed(example=root / "example", clash=root / "clash")


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Puts folders on ``sys.path`` for one test; the example's module is forgotten after it."""

    def add(folder: Path) -> None:
        monkeypatch.syspath_prepend(str(folder))

    yield add
    sys.modules.pop("watchdog_example_plugin", None)


def run_validate(config: Path, *folders: Path) -> subprocess.CompletedProcess[str]:
    """``python -m watchdog validate`` with ``folders`` on its PYTHONPATH, as an operator would run
    it with the plugin installed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(f) for f in folders)}
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "validate", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


OnPath = Callable[[Path], None]


def test_the_example_registers_from_its_entry_point(installed: Installed, on_path: OnPath) -> None:
    """Installed, the package's entry point ``metrics.constant`` joins the registry under its own
    distribution name, beside the shipped providers."""
    on_path(installed.example)
    registry = PluginRegistry.from_entry_points()
    adapter = registry.find("metrics", "constant")
    assert adapter is not None
    assert adapter.distribution == NAME
    assert {"constant", "prometheus", "datadog"} <= set(registry.types("metrics"))


async def test_the_example_provider_validates_and_answers(installed: Installed, on_path: OnPath) -> None:
    """A config naming ``type: constant`` validates through the adapter's own Settings (an unknown
    key is refused), and the built provider honours the MetricsProvider port."""
    on_path(installed.example)
    registry = PluginRegistry.from_entry_points()
    loaded = load_config_text(CONFIG, "w.yaml", registry, environ={})
    adapter = registry.find("metrics", "constant")
    assert adapter is not None
    provider = adapter.build(
        "fixed",
        loaded.adapter_settings[("providers", "fixed")],
        AdapterContext(metrics=WatchdogMetrics(), clock=SystemClock()),
    )
    assert isinstance(provider, MetricsProvider)
    assert await provider.query("requests v2", at=1_700_000_000.0, interval=30.0) == [
        Sample({"source": "example"}, 120.0)
    ]
    await provider.aclose()
    with pytest.raises(ConfigError) as caught:
        load_config_text(CONFIG.replace("value: 120", "valeu: 120"), "w.yaml", registry, environ={})
    assert any("providers.fixed.valeu: unknown key" in p for p in caught.value.problems)


def test_without_the_package_the_type_is_unknown() -> None:
    """The type comes from the installed package alone: without it, ``constant`` is unknown."""
    registry = PluginRegistry.from_entry_points()
    assert registry.find("metrics", "constant") is None
    with pytest.raises(ConfigError) as caught:
        load_config_text(CONFIG, "w.yaml", registry, environ={})
    assert any("unknown metrics type 'constant'" in p for p in caught.value.problems)


def test_two_packages_claiming_one_name_are_refused_naming_both(
    installed: Installed, on_path: OnPath
) -> None:
    """Two installed distributions declaring ``metrics.constant``: the registry refuses to build
    (nothing half-registered) with one error naming the entry and both distributions."""
    on_path(installed.example)
    on_path(installed.clash)
    with pytest.raises(ConfigError) as caught:
        PluginRegistry.from_entry_points()
    (problem,) = caught.value.problems
    assert "metrics.constant is registered twice" in problem
    assert NAME in problem and CLASH in problem


def test_watchdog_validate_loads_the_installed_plugin(installed: Installed, tmp_path: Path) -> None:
    """The CLI, run with the plugin installed, validates a config that uses it (exit 0); with the
    clashing package installed too, it refuses (exit 2) naming both packages."""
    config = tmp_path / "watchdog.yaml"
    config.write_text(CONFIG)
    ok = run_validate(config, installed.example)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    clash = run_validate(config, installed.example, installed.clash)
    assert clash.returncode == 2, clash.stdout
    assert "metrics.constant is registered twice" in clash.stderr
    assert NAME in clash.stderr and CLASH in clash.stderr
