"""Flagger's confirm-promotion and rollback gates (DESIGN §4): Flagger acts on the status code alone,
so the code must say exactly what the watch decided, and only to a caller that proves it is Flagger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.sources import flagger_event
from watchdog.config.loader import load_config_text
from watchdog.model import DeployEvent, State, Verdict
from watchdog.plugins import PluginRegistry
from watchdog.runtime import Runtime
from watchdog.server.app import create_app

TOKEN = "flagger-token"
CONFIG = f"""\
server:
  webhook_secrets: {{flagger: "{TOKEN}"}}
store: {{url: "sqlite:///:memory:"}}
providers:
  prom: {{type: prometheus, url: "http://127.0.0.1:9"}}
policies:
  - name: canaries
    bake: 10m
    checks:
      - {{name: errors, type: ratio, provider: prom, bad: b, total: t, compare: slo, objective: 0.01}}
"""


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, Runtime]]:
    registry = PluginRegistry.from_entry_points()
    runtime = Runtime(load_config_text(CONFIG, "watchdog.yaml", registry), registry)
    await runtime.store.open()
    async with TestClient(TestServer(create_app(runtime))) as c:
        yield c, runtime
    await runtime.store.aclose()


async def decided(runtime: Runtime, checksum: str, state: State, verdict: Verdict) -> None:
    event = DeployEvent("flagger", f"podinfo/test/{checksum}/Progressing", "podinfo", checksum, "test")
    deployment, _ = await runtime.store.create(event, "canaries", State.BAKING, 1.0)
    if state is not State.BAKING:
        await runtime.store.transition(deployment.id, [State.BAKING], state, 2.0, verdict=verdict)


async def gate(c: TestClient, which: str, checksum: str, token: str | None = TOKEN) -> tuple[int, dict]:
    r = await c.post(
        f"/v1/gates/flagger/{which}",
        data=flagger_event("Progressing", token=token, checksum=checksum),
        headers={"Content-Type": "application/json"},
    )
    return r.status, await r.json()


async def test_promotion_is_confirmed_only_after_the_watch_passed(client) -> None:
    """Baking: 409 (Flagger waits). Passed: 200. The rollback gate says no to a passed canary."""
    c, runtime = client
    await decided(runtime, "aaa", State.BAKING, Verdict.PENDING)
    status, body = await gate(c, "promotion", "aaa")
    assert (status, body["verdict"]) == (409, "pending")
    await decided(runtime, "bbb", State.PASSED, Verdict.PASS)
    status, body = await gate(c, "promotion", "bbb")
    assert (status, body["verdict"]) == (200, "pass")
    assert (await gate(c, "rollback", "bbb"))[0] == 409


async def test_rollback_gate_answers_200_when_the_watchdog_decided_to_roll_back(client) -> None:
    c, runtime = client
    await decided(runtime, "ccc", State.ROLLED_BACK, Verdict.FAIL)
    status, body = await gate(c, "rollback", "ccc")
    assert (status, body["verdict"]) == (200, "fail")
    assert (await gate(c, "promotion", "ccc"))[0] == 409


async def test_gates_authenticate_like_flagger_events_and_name_what_is_missing(client) -> None:
    """A wrong or missing metadata.token is 401; an unknown canary 404; an unknown gate 404."""
    c, runtime = client
    await decided(runtime, "ddd", State.PASSED, Verdict.PASS)
    assert (await gate(c, "promotion", "ddd", token="wrong"))[0] == 401
    assert (await gate(c, "promotion", "ddd", token=None))[0] == 401
    status, body = await gate(c, "promotion", "never-deployed")
    assert status == 404 and "never-deployed" in body["detail"]
    status, body = await gate(c, "confirm-rollout", "ddd")
    assert status == 404 and body["error"] == "not_found"
