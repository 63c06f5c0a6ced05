"""Fixtures for the rollback adapters: a real HTTP server on loopback that records what it gets and
answers what a test tells it to, a fixed clock, and deployments built from the model classes."""

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

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply = Reply()
        self.release = asyncio.Event()
        self.base_url = ""

    def url(self, path: str = "/hook") -> str:
        return self.base_url.rstrip("/") + path

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
async def server() -> AsyncIterator[RecordingServer]:
    recorder = RecordingServer()
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
def make_deployment() -> Callable[..., Deployment]:
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
            "state": State.ROLLING_BACK,
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
