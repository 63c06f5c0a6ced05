"""A scripted HTTP server for provider tests, the published Prometheus examples, and the shape
of the live integration setup.

``fixtures/`` holds copies of the Prometheus API and exposition examples from
shared/fixtures/prometheus, so the suite does not depend on a folder outside the repository.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.support.prometheus_server import PrometheusServer
from watchdog.demo.simapp import SimulatedApp

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


@dataclass
class Reply:
    """One scripted answer. ``delay`` sleeps before answering (a slow server)."""

    body: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


class ScriptedServer:
    """An HTTP server on loopback that answers each path from a script; the last reply repeats.

    Tests set what a path answers (``reply``) and read back what was asked (``seen``).
    """

    def __init__(self) -> None:
        self._script: dict[str, list[Reply]] = {}
        self.requests: list[Seen] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, path: str, *replies: Reply) -> None:
        self._script[path] = list(replies)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Seen(request.path, dict(request.query), dict(request.headers), time.monotonic())
        )
        script = self._script.get(request.path)
        if not script:
            return web.Response(status=404, text="no such path")
        reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            status=reply.status,
            text=reply.body,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: handlers still sleeping for a timeout test are not waited for.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


RPS = 200.0
"""Requests per second of each live app: enough for stable ratios within a 5 s window."""
V2_ERROR_RATE = 0.1


@dataclass
class Live:
    """The integration setup: checkout v1 (healthy) and v2 (failing), scraped by Prometheus."""

    stable: SimulatedApp
    canary: SimulatedApp
    prometheus: PrometheusServer
