"""The bake loop of one deployment.

A Watch owns no global state and reads time only from its clock, so ``replay`` runs this very loop
over recorded numbers in virtual time. It polls on a fixed grid (``created_at + k * interval``):
after a restart it continues on the same grid, and a poll it missed while the daemon was down is
made late with its own timestamp (Prometheus answers for the past), so a crash loses no interval.
It returns the final decision and leaves acting on it (rollback, notification) to the caller.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from watchdog.analysis import Decision, PolicyAnalysis, RatioCheck, RatioCounts
from watchdog.clock import Clock
from watchdog.config.models import PolicyConfig, format_duration
from watchdog.errors import PermanentError, TemporaryError
from watchdog.metrics import WatchdogMetrics
from watchdog.model import CheckReport, Deployment, Verdict
from watchdog.ports import MetricsProvider
from watchdog.templates import render

log = structlog.get_logger("watchdog.watch")

PollHook = Callable[[int, tuple[CheckReport, ...], dict[str, object]], Awaitable[None]]


class Blind(Exception):
    """A poll of one check produced nothing usable; the message says why."""


@dataclass
class Watch:
    deployment: Deployment
    policy: PolicyConfig
    providers: Mapping[str, MetricsProvider]
    clock: Clock
    stop: asyncio.Event
    metrics: WatchdogMetrics | None = None
    on_poll: PollHook | None = None

    def __post_init__(self) -> None:
        self.analysis = PolicyAnalysis(self.policy)
        self.analysis.load_state(dict(self.deployment.analysis))
        self.polls = self.deployment.polls
        self.total_polls = max(1, math.ceil(self.policy.bake / self.policy.interval - 1e-9))

    async def run(self) -> Decision | None:
        """Bake until a verdict; None when stopped first (the deployment stays baking)."""
        d = self.deployment
        structlog.contextvars.bind_contextvars(deployment_id=d.id, service=d.service)
        start = d.created_at
        decision = self.analysis.decide(final=False)
        if decision.verdict is Verdict.FAIL:  # resumed after a crash between decision and action
            return decision
        while self.polls < self.total_polls:
            at = start + (self.polls + 1) * self.policy.interval
            if not await self.clock.sleep_until(at, self.stop):
                return None
            await self.poll(at)
            final = self.polls >= self.total_polls
            decision = self.analysis.decide(final=final)
            reports = decision.reports
            if self.on_poll is not None:
                await self.on_poll(self.polls, reports, self.analysis.to_state())
            log.info(
                "poll.done",
                poll=self.polls,
                of=self.total_polls,
                verdict=decision.verdict.value,
                checks={r.name: r.verdict.value for r in reports},
            )
            if decision.verdict is not Verdict.PENDING:
                return decision
        return self.analysis.decide(final=True)

    async def poll(self, at: float) -> None:
        """One poll of every check, concurrently, within the policy's poll budget."""
        self.polls += 1
        checks = list(self.analysis.checks.values())
        results = await asyncio.gather(*(self._measure(c, at) for c in checks), return_exceptions=True)
        for check, result in zip(checks, results, strict=True):
            name = check.config.name
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                reason = str(result) or type(result).__name__
                outcome = "no_data" if isinstance(result, Blind) else "error"
                check.blind(reason)
                log.warning("poll.blind", check=name, outcome=outcome, reason=reason)
            else:
                canary, baseline = result
                check.observe(canary, baseline)
                outcome = "ok"
            if self.metrics is not None:
                self.metrics.polls.labels(check=name, outcome=outcome).inc()

    def _values(self, version: str) -> dict[str, str]:
        e = self.deployment.event
        values = dict(e.labels)
        values.update(
            service=e.service,
            environment=e.environment,
            version=version,
            baseline_version=e.baseline_version or "",
            interval=format_duration(self.policy.interval),
        )
        return values

    async def _measure(self, check: RatioCheck, at: float) -> tuple[RatioCounts, RatioCounts | None]:
        cfg = check.config
        provider = self.providers[cfg.provider]
        e = self.deployment.event
        arms: list[tuple[str, str]] = [("canary", e.version)]
        if cfg.compare == "baseline":
            if not e.baseline_version:
                raise Blind(
                    "no baseline version known (the event carried none and no earlier version of "
                    "this service and environment passed)"
                )
            arms.append(("baseline", e.baseline_version))
        assert cfg.bad is not None and cfg.total is not None
        jobs = []
        for arm, version in arms:
            values = self._values(version)
            for part, template in (("bad", cfg.bad), ("total", cfg.total)):
                query = render(template, values, provider.escape)
                check.queries[f"{arm}.{part}"] = query
                jobs.append(self._query(provider, cfg.provider, query, at))
        try:
            sums = await asyncio.wait_for(asyncio.gather(*jobs), self.policy.poll_timeout)
        except TimeoutError as exc:
            raise TemporaryError(
                f"provider {cfg.provider} did not answer within {format_duration(self.policy.poll_timeout)}"
            ) from exc
        if sums[1] is None:
            raise Blind(f"no data for {arms[0][0]} ({e.version}) from provider {cfg.provider}")
        canary = RatioCounts(bad=sums[0] or 0.0, total=sums[1])
        baseline = None
        if len(arms) == 2:
            if sums[3] is None:
                raise Blind(f"no data for baseline ({e.baseline_version}) from provider {cfg.provider}")
            baseline = RatioCounts(bad=sums[2] or 0.0, total=sums[3])
        return canary, baseline

    async def _query(self, provider: MetricsProvider, name: str, query: str, at: float) -> float | None:
        """Sum of the query's series, or None when it returned none (no data)."""
        started = time.monotonic()
        try:
            samples = await provider.query(query, at=at, interval=self.policy.interval)
        except (TemporaryError, PermanentError):
            raise
        except Exception as exc:  # an adapter bug must blind the check, not kill the Watch
            log.error("provider.crashed", provider=name, error=repr(exc))
            raise TemporaryError(f"provider {name} failed: {exc!r}") from exc
        finally:
            log.debug("provider.query", provider=name, seconds=time.monotonic() - started)
        if not samples:
            return None
        return float(sum(s.value for s in samples))
