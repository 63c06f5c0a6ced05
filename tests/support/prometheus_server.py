"""A real Prometheus server for integration tests, on a free loopback port.

It scrapes the given targets every second, keeps its TSDB in a temporary folder and is stopped
(terminate, then kill) when the test is done. Real Prometheus rather than a fake, because the
queries the watchdog renders (``increase(...[5s])``, ``sum by (le)``, escaped label values) must be
accepted and answered by the real PromQL engine.

The binary is Debian's ``prometheus`` package (``/usr/bin/prometheus``); ``WATCHDOG_PROMETHEUS``
may point elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiohttp

from tests.support.processes import end_process

DEFAULT_BINARY = "/usr/bin/prometheus"
START_ATTEMPTS = 3  # a free port found by binding port 0 can be taken before Prometheus binds it


class PrometheusMissing(RuntimeError):
    """The Prometheus binary is not installed."""


def find_binary() -> str:
    """The Prometheus binary, or an error that says how to get it."""
    configured = os.environ.get("WATCHDOG_PROMETHEUS")
    candidate = configured or shutil.which("prometheus") or DEFAULT_BINARY
    if Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise PrometheusMissing(
        f"Prometheus is not installed ({candidate} not found). The integration tests run a real "
        "Prometheus server: run the project's test command (`bash .ci/run`), which installs "
        "Debian's `prometheus` package, or `apt-get install prometheus` yourself "
        "(or set WATCHDOG_PROMETHEUS to a prometheus binary)."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_config(targets: list[str], scrape_interval: str = "1s") -> str:
    """prometheus.yml for ``targets`` (metrics URLs); one job each, named ``target<i>``, since
    each may have its own path and scheme. JSON is YAML, and needs no YAML library here."""
    jobs = []
    for i, url in enumerate(targets):
        parts = urlsplit(url)
        jobs.append(
            {
                "job_name": f"target{i}",
                "scheme": parts.scheme or "http",
                "metrics_path": parts.path or "/metrics",
                "static_configs": [{"targets": [parts.netloc]}],
            }
        )
    config = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": jobs,
    }
    return json.dumps(config, indent=2)


class PrometheusServer:
    """``async with PrometheusServer([app.metrics_url]) as prom: prom.url``.

    Start-up waits until ``/-/ready`` answers and every target has been scraped successfully, so a
    test can query at once. That takes about 5 s: Prometheus hands new targets to its scrape loop
    on a 5 s tick that no flag shortens, so share one server per test module. Async on purpose:
    the targets usually live in the test's own event loop and must keep answering scrapes while
    we wait.
    """

    def __init__(
        self, targets: list[str], *, scrape_interval: str = "1s", ready_timeout: float = 30.0
    ) -> None:
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.ready_timeout = ready_timeout
        self.port: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """What Prometheus wrote to stderr so far, for failure messages."""
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        binary = find_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="watchdog-prometheus-")
        folder = Path(self._dir.name)
        (folder / "prometheus.yml").write_text(scrape_config(self.targets, self.scrape_interval))
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                self.port = free_port()
                await self._spawn(binary, folder)
                try:
                    await self._wait_ready()
                    return
                except _Exited:
                    log = self.log
                    if attempt == START_ATTEMPTS or "address already in use" not in log:
                        raise RuntimeError(f"Prometheus exited during start-up:\n{log[-3000:]}") from None
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, binary: str, folder: Path) -> None:
        with (folder / "prometheus.log").open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise _Exited
                if await self._ready(session) and await self._targets_up(session):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Prometheus at {self.url} not ready with all targets up within "
                        f"{self.ready_timeout}s:\n{self.log[-3000:]}"
                    )
                await asyncio.sleep(0.1)

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _targets_up(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(f"{self.url}/api/v1/targets") as response:
            body = await response.json()
        active = body["data"]["activeTargets"]
        return len(active) == len(self.targets) and all(t["health"] == "up" for t in active)

    async def stop(self, timeout: float = 5.0) -> None:
        """Terminate and wait; kill what does not exit within ``timeout``. Safe to call twice."""
        process, self._process = self._process, None
        await end_process(process, timeout)
        folder, self._dir = self._dir, None
        if folder is not None:
            folder.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _Exited(Exception):
    """The Prometheus process ended before it became ready."""
