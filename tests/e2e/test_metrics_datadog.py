"""The daemon measuring a canary in Datadog (issue 6, "Done when"): ``python -m watchdog serve`` with
a ``datadog`` provider whose ``url:`` points at a local server answering Datadog's v2 timeseries API
in its recorded format, driven only over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from tests.e2e.conftest import SECRET, VIEWER, deploy_body
from tests.support.daemon import DaemonProcess, Recorder, free_port, post_event, wait_for_state

API_KEY = "e2e-dd-api-key"
APP_KEY = "e2e-dd-app-key"
RPS = 200
"""Requests per second of each version, as in the other end-to-end tests."""

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  webhook_secrets:
    generic: ${{WATCHDOG_WEBHOOK_SECRET}}
  api_tokens:
    - {{name: dashboards, token: "{viewer}", role: viewer}}
  shutdown_timeout: 5s
store:
  url: sqlite://{db}
logging:
  format: json
providers:
  dd:
    type: datadog
    url: "{datadog}"
    api_key: ${{DD_API_KEY}}
    app_key: ${{DD_APP_KEY}}
rollback:
  hook: {{type: http, url: "{hook}/rollback"}}
policies:
  - name: checkout-prod
    match: {{service: checkout, environment: prod}}
    bake: {bake}
    interval: 1s
    alpha: 0.01
    rollback: hook
    checks:
      - name: errors
        type: ratio
        provider: dd
        bad: 'sum:trace.http.request.errors{{service:{{service}},version:{{version}}}}.as_count()'
        total: 'sum:trace.http.request.hits{{service:{{service}},version:{{version}}}}.as_count()'
        compare: baseline
        critical: true
"""

_SCOPE = re.compile(
    r"^sum:trace\.http\.request\.(hits|errors)\{service:([^,}]+),version:([^,}]+)\}\.as_count\(\)$"
)


@dataclass
class DatadogSite:
    """A loopback server answering ``POST /api/v2/query/timeseries`` like Datadog.

    Requests need the configured ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` (else 403, as Datadog
    answers). The numbers are seeded counts: each second of each version has ``n ~ Poisson(RPS)``
    requests of which ``Binomial(n, error_rate[version])`` failed, drawn from a generator seeded by
    (version, second), so the ``hits`` and ``errors`` queries of one second always agree. Points are
    per ``interval`` bucket (aligned to the epoch, as Datadog aligns rollups), in the recorded
    response format (``series`` / ``times`` / ``values``)."""

    error_rates: dict[str, float]
    authenticated: int = 0
    refused: int = 0
    queries: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self, version: str, second: int) -> tuple[int, int]:
        rng = np.random.default_rng([zlib.crc32(version.encode()), second])
        n = int(rng.poisson(RPS))
        return n, int(rng.binomial(n, self.error_rates.get(version, 0.0)))

    async def handle(self, request: web.Request) -> web.Response:
        keys = (request.headers.get("DD-API-KEY"), request.headers.get("DD-APPLICATION-KEY"))
        if keys != (API_KEY, APP_KEY):
            self.refused += 1
            return web.json_response({"errors": ["Forbidden"]}, status=403)
        self.authenticated += 1
        if request.method != "POST" or request.path != "/api/v2/query/timeseries":
            return web.json_response({"errors": ["Not found"]}, status=404)
        attributes = (await request.json())["data"]["attributes"]
        query = attributes["queries"][0]["query"]
        self.queries.append(query)
        match = _SCOPE.match(query)
        if match is None:
            return web.json_response({"errors": [f"Error parsing query: {query}"]}, status=400)
        metric, version = match.group(1), match.group(3)
        start, end, step = attributes["from"], attributes["to"], max(attributes.get("interval", 1000), 1000)
        times, values = [], []
        bucket = -(-start // step) * step  # the first bucket that starts inside [from, to)
        while bucket < end:
            seconds = range(bucket // 1000, (bucket + step) // 1000)
            hits_errors = [self.counts(version, s) for s in seconds]
            times.append(bucket)
            values.append(float(sum(h if metric == "hits" else e for h, e in hits_errors)))
            bucket += step
        series = [{"group_tags": [], "query_index": 0, "unit": None}] if times else []
        body = {
            "data": {
                "id": "0",
                "type": "timeseries_response",
                "attributes": {"series": series, "times": times, "values": [values] if times else []},
            }
        }
        return web.Response(text=json.dumps(body), content_type="application/vnd.api+json")


@dataclass
class Stack:
    base: str
    daemon: DaemonProcess
    datadog: DatadogSite
    hook: Recorder
    session: aiohttp.ClientSession


@pytest.fixture
async def datadog_stack(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Builds the daemon, the Datadog-shaped server and the rollback hook; ``canary_error_rate``
    sets how bad v2 is against v1's 0.5 %."""
    cleanups: list[Callable[[], Any]] = []

    async def build(*, canary_error_rate: float, bake: str = "60s", app_key: str = APP_KEY) -> Stack:
        site = DatadogSite(error_rates={"v1": 0.005, "v2": canary_error_rate})
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", site.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        site.port = int(runner.addresses[0][1])
        cleanups.append(runner.cleanup)
        hook = Recorder(responses=[(200, '{"ok": true}')])
        await hook.start()
        cleanups.append(hook.stop)
        port = free_port()
        config = tmp_path / "watchdog.yaml"
        config.write_text(
            CONFIG.format(
                port=port,
                viewer=VIEWER,
                db=tmp_path / "state.db",
                datadog=site.url,
                hook=hook.url,
                bake=bake,
            )
        )
        env = {"WATCHDOG_WEBHOOK_SECRET": SECRET, "DD_API_KEY": API_KEY, "DD_APP_KEY": app_key}
        daemon = DaemonProcess(config, env=env)
        daemon.start()
        cleanups.append(daemon.close)
        session = aiohttp.ClientSession()
        cleanups.append(session.close)
        base = f"http://127.0.0.1:{port}"
        await daemon.wait_ready(base)
        return Stack(base, daemon, site, hook, session)

    yield build
    for cleanup in reversed(cleanups):
        result = cleanup()
        if asyncio.iscoroutine(result):
            await result


async def test_bad_canary_measured_in_datadog_is_rolled_back_once(datadog_stack: Any) -> None:
    """10 % errors on v2 against 0.5 % on v1, counted by Datadog queries with ``.as_count()``:
    rolled back exactly once within 15 s, every query authenticated with both keys, for both
    versions."""
    s = await datadog_stack(canary_error_rate=0.10)
    started = time.monotonic()
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202, body
    deployment_id = body["deployment_id"]
    final = await wait_for_state(
        s.session, s.base, deployment_id, {"rolled_back", "rollback_failed", "passed"}, VIEWER, timeout=15
    )
    assert time.monotonic() - started < 15
    assert final["state"] == "rolled_back", final
    (errors,) = final["checks"]
    assert errors["verdict"] == "fail"
    assert errors["statistics"]["e_value"] >= errors["statistics"]["threshold"]
    await asyncio.sleep(1.5)  # a second rollback, if there were one, would arrive by now
    rollbacks = [r for r in s.hook.requests if r.path == "/rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0].headers["Idempotency-Key"] == f"{deployment_id}:rollback"
    site = s.datadog
    assert site.refused == 0 and site.authenticated >= 4
    assert {q for q in site.queries if "version:v2" in q} and {q for q in site.queries if "version:v1" in q}
    assert all(q.endswith(".as_count()") and "service:checkout" in q for q in site.queries)


async def test_healthy_canary_measured_in_datadog_passes(datadog_stack: Any) -> None:
    """The same 0.5 % on both versions: the bake ends ``passed`` after its polls and the rollback
    hook is never called."""
    s = await datadog_stack(canary_error_rate=0.005, bake="4s")
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202, body
    final = await wait_for_state(
        s.session, s.base, body["deployment_id"], {"passed", "rolled_back", "inconclusive"}, VIEWER, 20
    )
    assert final["state"] == "passed", final
    assert s.hook.requests == []
    assert s.datadog.refused == 0 and s.datadog.authenticated >= 4 * final["polls"]


async def test_keys_datadog_refuses_leave_the_check_blind_not_failing(datadog_stack: Any) -> None:
    """With an application key Datadog answers 403 to, the bake ends ``inconclusive`` (blind is not
    a regression: no rollback), and the reason names the provider and what to check."""
    s = await datadog_stack(canary_error_rate=0.10, bake="3s", app_key="revoked-app-key")
    status, body = await post_event(s.session, s.base, deploy_body(), SECRET)
    assert status == 202, body
    final = await wait_for_state(
        s.session, s.base, body["deployment_id"], {"passed", "rolled_back", "inconclusive"}, VIEWER, 20
    )
    assert final["state"] == "inconclusive", final
    assert "provider dd: Datadog answered 403 Forbidden: check api_key/app_key" in final["reason"]
    assert s.hook.requests == []
    assert s.datadog.authenticated == 0 and s.datadog.refused >= 1
