"""Test helpers: the daemon as a real subprocess, real HTTP servers that record what they receive,
and signed webhook requests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from watchdog.signing import sign_headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """A real aiohttp server on loopback that records every request and answers from a script:
    ``responses`` are (status, body) pairs used in turn, the last one repeated."""

    responses: list[tuple[int, str]] = field(default_factory=lambda: [(200, "ok")])
    requests: list[Recorded] = field(default_factory=list)
    delay: float = 0.0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        index = min(len(self.requests), len(self.responses)) - 1
        status, body = self.responses[index]
        return web.Response(status=status, text=body)


class DaemonProcess:
    """``python -m watchdog serve`` in a subprocess, the way systemd or a container runs it."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, log: Path | None = None):
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.log = log or config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._logfile = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchdog", "serve", "--config", str(self.config)],
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    async def wait_ready(self, base: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    async with session.get(f"{base}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"daemon not ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._logfile.flush()
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the daemon took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        if hasattr(self, "_logfile"):
            self._logfile.close()


async def post_event(
    session: aiohttp.ClientSession,
    base: str,
    body: dict[str, Any] | bytes,
    secret: str | None,
    *,
    source: str = "generic",
    now: float | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    if secret is not None:
        h.update(sign_headers(secret, raw, time.time() if now is None else now))
    h.update(headers or {})
    async with session.post(f"{base}/v1/events/{source}", data=raw, headers=h) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


async def wait_for_state(
    session: aiohttp.ClientSession,
    base: str,
    deployment_id: str,
    states: set[str],
    token: str,
    timeout: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with session.get(
            f"{base}/v1/deployments/{deployment_id}", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            last = await r.json()
        if last.get("state") in states:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"deployment never reached {states}; last: {json.dumps(last, indent=1)}")


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` is truthy: for effects that follow a state change (a notification
    is sent after the state it reports is stored)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)
