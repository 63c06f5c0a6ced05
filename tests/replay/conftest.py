"""Fixtures for ``watchdog replay``: configs written to files as an operator would, recordings built
in the DESIGN §6 format, and the config loaded through the real loader and plugin registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from watchdog.config.loader import LoadedConfig, load_config
from watchdog.plugins import PluginRegistry

FIXTURES = Path(__file__).parent / "fixtures"
DESIGN_EXAMPLE = FIXTURES / "design-example.json"

RATIO = """\
      - name: errors
        type: ratio
        provider: prom
        bad: 'sum(increase(requests_total{service="{service}",version="{version}",code=~"5.."}[{interval}]))'
        total: 'sum(increase(requests_total{service="{service}",version="{version}"}[{interval}]))'
        critical: true
"""
HISTOGRAM = """\
      - name: latency
        type: histogram
        provider: prom
        query: 'sum by (le) (increase(duration_seconds_bucket{version="{version}"}[{interval}]))'
"""
GAUGE = """\
      - name: cpu
        type: gauge
        provider: dd
        query: 'avg:container.cpu.usage{service:{service},version:{version}}'
"""


def config_text(
    *, bake: str = "5m", interval: str = "30s", checks: str = RATIO, extra: str = "", alpha: float = 0.01
) -> str:
    """A config with one policy for checkout in prod (``extra`` policies come first)."""
    return f"""\
providers:
  prom: {{type: prometheus, url: "http://127.0.0.1:9090"}}
  dd: {{type: prometheus, url: "http://127.0.0.1:9091"}}
policies:
{extra}  - name: checkout-prod
    match: {{service: checkout, environment: prod}}
    bake: {bake}
    interval: {interval}
    alpha: {alpha}
    checks:
{checks}"""


def ratio_recording(
    canary: list[tuple[float, float]],
    baseline: list[tuple[float, float]],
    *,
    interval: float = 30,
    **deployment: Any,
) -> dict[str, Any]:
    """A recording of the `errors` check: (bad, total) per poll for each arm, one poll per interval."""
    fields = {"service": "checkout", "environment": "prod", "version": "v2", "baseline_version": "v1"}
    fields.update(deployment)

    def points(counts: list[tuple[float, float]]) -> list[list[Any]]:
        return [[interval * (k + 1), {"bad": b, "total": t}] for k, (b, t) in enumerate(counts)]

    arms = {"canary": points(canary), "baseline": points(baseline)}
    return {"deployment": fields, "checks": {"errors": arms}}


def healthy(polls: int) -> dict[str, Any]:
    """Both arms with the same counts at every poll: no evidence of anything."""
    return ratio_recording([(5, 1500)] * polls, [(5, 1500)] * polls)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`watchdog replay` in-process configures structlog to print to the sys.stderr of that moment
    (pytest's capture, closed after the test); put the previous configuration back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(**kwargs: Any) -> Path:
        path = tmp_path / "watchdog.yaml"
        path.write_text(config_text(**kwargs), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_config: Callable[..., Path]) -> Callable[..., LoadedConfig]:
    """Load a config written by ``write_config`` with the real loader (secrets not needed)."""

    def do(**kwargs: Any) -> LoadedConfig:
        return load_config(write_config(**kwargs), PluginRegistry.from_entry_points(), strict_secrets=False)

    return do


@pytest.fixture
def recordings(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write recordings (name -> JSON object, or raw text) into a folder and return the folder."""
    folder = tmp_path / "recordings"
    folder.mkdir()

    def write(files: dict[str, Any]) -> Path:
        for name, content in files.items():
            text = content if isinstance(content, str) else json.dumps(content)
            (folder / name).write_text(text, encoding="utf-8")
        return folder

    return write
