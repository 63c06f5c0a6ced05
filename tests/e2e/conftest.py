"""End-to-end fixtures: the daemon as a subprocess configured by a real file, two simulated app
instances exporting real metrics, and real HTTP servers standing in for the rollback hook and Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.daemon import DaemonProcess, Recorder, free_port
from watchdog.demo.simapp import SimulatedApp

SECRET = "e2e-webhook-secret"
VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  webhook_secrets:
    generic: ${{WATCHDOG_WEBHOOK_SECRET}}
  api_tokens:
    - {{name: dashboards, token: "{viewer}", role: viewer}}
    - {{name: oncall, token: "{operator}", role: operator}}
  shutdown_timeout: 5s
store:
  url: sqlite://{db}
logging:
  format: json
providers:
  apps:
    type: scrape
    targets: ["{old}", "{new}"]
rollback:
  hook: {{type: http, url: "{hook}/rollback"}}
notify:
  slack: {{type: slack, webhook_url: "{slack}/services/T000/B000/XXXX"}}
policies:
  - name: checkout-prod
    match: {{service: checkout, environment: prod}}
    bake: {bake}
    interval: 1s
    alpha: 0.01
    rollback: hook
    notify: [slack]
    checks:
      - name: errors
        type: ratio
        provider: apps
        bad: 'http_requests_total{{service="{{service}}",version="{{version}}",code=~"5.."}}'
        total: 'http_requests_total{{service="{{service}}",version="{{version}}"}}'
        compare: baseline
        critical: true
"""


@dataclass
class Stack:
    base: str
    daemon: DaemonProcess
    old: SimulatedApp
    new: SimulatedApp
    hook: Recorder
    slack: Recorder
    session: aiohttp.ClientSession
    config: Path


@pytest.fixture
async def stack_factory(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Builds the whole stack; ``new_error_rate`` sets how bad the canary is."""
    started: list[Stack] = []

    async def build(
        *, new_error_rate: float, bake: str = "60s", hook_responses: list[tuple[int, str]] | None = None
    ) -> Stack:
        old = SimulatedApp(version="v1", rps=200, error_rate=0.005, seed=1)
        new = SimulatedApp(version="v2", rps=200, error_rate=new_error_rate, seed=2)
        await old.start()
        await new.start()
        hook = Recorder(responses=hook_responses or [(200, '{"ok": true}')])
        slack = Recorder(responses=[(200, "ok")])
        await hook.start()
        await slack.start()
        port = free_port()
        config = tmp_path / "watchdog.yaml"
        config.write_text(
            CONFIG.format(
                port=port,
                viewer=VIEWER,
                operator=OPERATOR,
                db=tmp_path / "state.db",
                old=old.metrics_url,
                new=new.metrics_url,
                hook=hook.url,
                slack=slack.url,
                bake=bake,
            )
        )
        daemon = DaemonProcess(config, env={"WATCHDOG_WEBHOOK_SECRET": SECRET})
        daemon.start()
        base = f"http://127.0.0.1:{port}"
        await daemon.wait_ready(base)
        stack = Stack(base, daemon, old, new, hook, slack, aiohttp.ClientSession(), config)
        started.append(stack)
        return stack

    yield build
    for s in started:
        s.daemon.close()
        await s.session.close()
        for server in (s.old, s.new):
            await server.stop()
        await s.hook.stop()
        await s.slack.stop()


def deploy_body(event_id: str = "deploy-1", **extra: object) -> dict[str, object]:
    return {
        "id": event_id,
        "service": "checkout",
        "environment": "prod",
        "version": "v2",
        "baseline_version": "v1",
        "target": {"namespace": "shop", "deployment": "checkout"},
        **extra,
    }
