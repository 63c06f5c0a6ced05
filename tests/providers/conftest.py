"""Fixtures for every adapter's tests: a real HTTP server on loopback that records what it gets and
answers what a test tells it to, a fixed clock, deployments built from the model classes, and adapters
built from raw settings and closed after the test.

A kind's own conftest overrides what differs: ``first_reply`` and ``hook_path`` (the notifiers talk to
something shaped like Slack), ``deployment_state`` (what state the adapter sees a deployment in), or
``server`` and ``context`` altogether (the metrics providers).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from watchdog.clock import VirtualClock
from watchdog.metrics import WatchdogMetrics
from watchdog.model import CheckReport, DeployEvent, Deployment, State, Verdict
from watchdog.plugins import AdapterContext

NOW = 1_700_000_000.0

_PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the server answers next; ``hang`` holds the answer until the test ends."""

    status: int = 200
    body: str = "{}"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class RecordingServer:
    """A loopback HTTP server that records every request and answers with ``reply``."""

    def __init__(self, reply: Reply, default_path: str) -> None:
        self.requests: list[Recorded] = []
        self.reply = reply
        self.release = asyncio.Event()
        self.base_url = ""
        self._default_path = default_path

    def url(self, path: str | None = None) -> str:
        return self.base_url.rstrip("/") + (path if path is not None else self._default_path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers=request.headers,
                body=await request.read(),
            )
        )
        reply = self.reply
        if reply.hang:
            await self.release.wait()
        return web.Response(
            status=reply.status,
            text=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
        )


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the loopback servers must not wander off to a proxy from the environment."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def first_reply() -> Reply:
    """What ``server`` answers until a test changes ``server.reply``: 200 and an empty JSON object."""
    return Reply()


@pytest.fixture
def hook_path() -> str:
    """The path ``server.url()`` points at when a test names none."""
    return "/hook"


@pytest.fixture
async def server(first_reply: Reply, hook_path: str) -> AsyncIterator[RecordingServer]:
    recorder = RecordingServer(first_reply, hook_path)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    recorder.base_url = str(test_server.make_url("/"))
    try:
        yield recorder
    finally:
        recorder.release.set()
        await test_server.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=NOW)


@pytest.fixture
def context(clock: VirtualClock) -> AdapterContext:
    return AdapterContext(metrics=WatchdogMetrics(), clock=clock)


@pytest.fixture
async def make_adapter(context: AdapterContext) -> AsyncIterator[Callable[..., Any]]:
    """Build an adapter from its class, a name and raw settings (as the config loader would), and
    close every one built after the test."""
    built: list[Any] = []

    def make(factory: Any, name: str, **settings: Any) -> Any:
        adapter = factory.from_settings(name, factory.Settings.model_validate(settings), context)
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        await adapter.aclose()


@pytest.fixture
def deployment_state() -> State:
    """The state ``make_deployment`` builds in: the rollback under way, as a rollback target sees it."""
    return State.ROLLING_BACK


@pytest.fixture
def make_deployment(deployment_state: State) -> Callable[..., Deployment]:
    """Build a Deployment of checkout v2 in prod; keyword arguments replace fields."""

    def make(**overrides: Any) -> Deployment:
        event = DeployEvent(
            source="generic",
            event_id="evt-1",
            service="checkout",
            version="v2",
            environment="prod",
            baseline_version="v1",
            strategy="canary",
            target={"namespace": "shop", "deployment": "checkout"},
            labels={"team": "payments"},
        )
        fields: dict[str, Any] = {
            "id": "dep-42",
            "event": event,
            "policy": "checkout-prod",
            "state": deployment_state,
            "verdict": Verdict.FAIL,
            "created_at": NOW - 600,
            "updated_at": NOW - 5,
            "decided_at": NOW - 5,
            "reason": "errors regressed",
            "polls": 20,
            "checks": (
                CheckReport(
                    name="errors",
                    verdict=Verdict.FAIL,
                    summary="errors 10.2 % vs 0.5 % on 2,400 requests; "
                    "evidence 4,512 against a threshold of 200",
                    statistics={"e_value": 4512.0, "threshold": 200.0},
                ),
            ),
        }
        fields.update(overrides)
        return Deployment(**fields)

    return make
