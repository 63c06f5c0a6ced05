"""A simulated app instance: a real Prometheus exporter fed with synthetic traffic.

``watchdog demo`` runs two of them (the stable and the new version) and flips the new one to
failing; integration tests point a real Prometheus (or the scrape provider) at them. The numbers go
through the same client library, text format and scrape path as a real service's, so what the
watchdog sees is what it would see in production, only with a known ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import numpy as np
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler

from watchdog.tasks import TaskGroup

__all__ = ["LATENCY_BUCKETS", "SimulatedApp", "Traffic"]

log = structlog.get_logger()

LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Edges around a typical web latency (median near 0.1 s), so a slow-down moves counts between
buckets instead of hiding inside one."""


@dataclass(frozen=True, slots=True)
class Traffic:
    """What some ticks generated: the ground truth a test compares the watchdog's numbers with."""

    requests: int = 0
    errors: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.requests + other.requests, self.errors + other.errors)


class SimulatedApp:
    """One instance of ``service`` at ``version``, serving ``/metrics`` on 127.0.0.1.

    ``rps``, ``error_rate`` and ``latency_median`` may be changed while it runs; the next tick uses
    the new values. Requests per tick are Poisson (arrivals of independent users), errors Binomial
    given the requests, latencies lognormal (right-skewed, as real latencies are) with
    ``latency_sigma`` the spread of their logarithm.
    """

    def __init__(
        self,
        *,
        service: str = "checkout",
        version: str = "v1",
        rps: float = 100.0,
        error_rate: float = 0.001,
        latency_median: float = 0.08,
        latency_sigma: float = 0.5,
        tick: float = 0.1,
        port: int = 0,
        seed: int | None = None,
        generate_traffic: bool = True,
    ) -> None:
        """``generate_traffic=False`` serves ``/metrics`` without the background ticks, for tests
        that call ``tick()`` themselves and need exact counts; ``seed`` makes a run repeatable."""
        if tick <= 0:
            raise ValueError("tick must be a positive number of seconds")
        self.service = service
        self.version = version
        self.rps = rps
        self.error_rate = error_rate
        self.latency_median = latency_median
        self.latency_sigma = latency_sigma
        self.tick_seconds = tick
        self.generate_traffic = generate_traffic
        self.registry = CollectorRegistry()
        self.traffic = Traffic()
        self._requested_port = port
        self._port: int | None = None
        self._rng = np.random.default_rng(seed)
        self._requests = Counter(
            "http_requests_total",
            "HTTP requests served, by status code.",
            ["service", "version", "code"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve a request.",
            ["service", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Both codes exist from the start, at 0, as in a well-instrumented app: a query for errors
        # then answers 0 rather than no data before the first error.
        self._ok = self._requests.labels(service=service, version=version, code="200")
        self._failed = self._requests.labels(service=service, version=version, code="500")
        self._latency = self._duration.labels(service=service, version=version)
        self._runner: web.AppRunner | None = None
        self._tasks = TaskGroup(f"simapp:{service}:{version}")
        self._stop = asyncio.Event()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the app is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def target(self) -> str:
        """``host:port`` as a Prometheus ``static_configs`` target."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen, then start the traffic (unless disabled)."""
        if self._runner is not None:
            raise RuntimeError("the app is already started")
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self.registry))
        app.router.add_get("/healthz", _healthz)
        # Scrapes answer in milliseconds; stop() need not wait the default minute for stragglers.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._stop.clear()
        if self.generate_traffic:
            self._tasks.spawn(self._run(), "traffic")
        log.debug("simapp.started", service=self.service, version=self.version, url=self.url)

    async def stop(self) -> None:
        """Stop the traffic, then the server. Safe to call twice."""
        self._stop.set()
        if not await self._tasks.wait(timeout=2.0):
            await self._tasks.cancel_all()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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

    def tick(self, seconds: float | None = None) -> Traffic:
        """Serve one tick's worth of requests (``seconds``, default the tick length) at once."""
        span = self.tick_seconds if seconds is None else seconds
        n = int(self._rng.poisson(max(self.rps, 0.0) * span))
        if n == 0:
            return Traffic()
        errors = int(self._rng.binomial(n, min(max(self.error_rate, 0.0), 1.0)))
        latencies = self._rng.lognormal(math.log(self.latency_median), self.latency_sigma, n)
        self._ok.inc(n - errors)
        self._failed.inc(errors)
        for seconds_taken in latencies:
            self._latency.observe(float(seconds_taken))
        generated = Traffic(requests=n, errors=errors)
        self.traffic += generated
        return generated

    def generate(self, n_ticks: int) -> Traffic:
        """``n_ticks`` ticks at once: a test's deterministic stand-in for letting time pass."""
        total = Traffic()
        for _ in range(n_ticks):
            total += self.tick()
        return total

    async def _run(self) -> None:
        """Each tick serves the traffic of the time that really passed since the previous one, so
        the rate stays ``rps`` however late the event loop wakes us."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.tick_seconds)
            now = loop.time()
            self.tick(now - last)
            last = now


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")
