"""The bake loop of one deployment.

A Watch owns no global state and reads time only from its clock, so ``replay`` runs this very loop
over recorded numbers in virtual time. It polls on a fixed grid (``created_at + k * interval``):
after a restart it continues on the same grid, and a poll it missed while the daemon was down is
made late with its own timestamp (Prometheus answers for the past), so a crash loses no interval.
It returns the final decision and leaves acting on it (rollback, notification) to the caller.

Before the first poll, every check gets its reference: the same queries at the poll times of
``before_window`` ending at the deploy's start (at most MAX_REFERENCE_POLLS of them), which give
``compare: before`` its rate, ratios and histograms their dispersion, and histograms their edges.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from watchdog.analysis import (
    Buckets,
    Check,
    Decision,
    GaugeCheck,
    HistogramCheck,
    PolicyAnalysis,
    RatioCheck,
    RatioCounts,
    total_polls,
)
from watchdog.clock import Clock
from watchdog.config.models import PolicyConfig, format_duration
from watchdog.errors import PermanentError, TemporaryError
from watchdog.metrics import WatchdogMetrics
from watchdog.model import CheckReport, Deployment, Verdict
from watchdog.ports import MetricsProvider, Sample
from watchdog.templates import render

log = structlog.get_logger("watchdog.watch")

PollHook = Callable[[int, tuple[CheckReport, ...], dict[str, object]], Awaitable[None]]
T = TypeVar("T")
MAX_REFERENCE_POLLS = 120
"""How many intervals before the deploy a check samples (a query each; the default hour of 30 s
polls), a few at a time. A dispersion factor estimated from n intervals is off by about
sqrt(2/n): with 60, a service with independent errors is judged as if 10-20 % burstier in a third
of its deploys, which slows every decision by as much (bench/decisions, 30 min against 1 h of
history: r1k-x1.25 7.5 against 7.0 min, r1-x2 26.5 against 25.5) and at equal false rollbacks."""


class Blind(Exception):
    """A poll of one check produced nothing usable; the message says why."""


def immediate(provider: MetricsProvider | None) -> bool:
    """Whether ``provider`` declares ``immediate = True``: its ``query`` answers from memory and never
    waits (replay's RecordingProvider). Such a provider can neither hang nor overlap with itself, so
    the Watch calls it inline, one query after another, without tasks or a timeout: the same answers
    in the same order, at a fraction of the cost (replay runs millions of polls)."""
    return getattr(provider, "immediate", False) is True


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
        self.total_polls = total_polls(self.policy)
        self._inline = all(immediate(self.providers.get(c.provider)) for c in self.policy.checks)
        self._values_cache: dict[tuple[str, float | None], dict[str, str]] = {}
        self._rendered: dict[tuple[str, str, int], str] = {}
        self._plans: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}
        self._log: Any = log

    async def run(self) -> Decision | None:
        """Bake until a verdict; None when stopped first (the deployment stays baking)."""
        d = self.deployment
        structlog.contextvars.bind_contextvars(deployment_id=d.id, service=d.service)
        # structlog's lazy proxy assembles a logger from the configuration on every call; a Watch
        # assembles it once (context variables are still merged at each call).
        self._log = log.bind()
        start = d.created_at
        decision = self.analysis.decide(final=False, explain=False)
        if decision.verdict is not Verdict.PENDING:  # resumed after a crash between decision and action
            return decision
        for check in self.analysis.checks.values():
            if check.needs_reference:
                await self._fetch_reference(check)
        while self.polls < self.total_polls:
            at = start + (self.polls + 1) * self.policy.interval
            if not await self.clock.sleep_until(at, self.stop):
                return None
            await self.poll(at)
            final = self.polls >= self.total_polls
            decision = self.analysis.decide(final=final, explain=self.on_poll is not None)
            reports = decision.reports
            if self.on_poll is not None:
                await self.on_poll(self.polls, reports, self.analysis.to_state())
            self._log.info(
                "poll.done",
                poll=self.polls,
                of=self.total_polls,
                verdict=decision.verdict.value,
            )
            if decision.verdict is not Verdict.PENDING:
                return decision
        return self.analysis.decide(final=True)

    async def poll(self, at: float) -> None:
        """One poll of every check, concurrently, within the policy's poll budget."""
        self.polls += 1
        checks = list(self.analysis.checks.values())
        results: list[Any]
        if self._inline:
            results = [self._measure_inline(c, at) for c in checks]
        else:
            results = await asyncio.gather(*(self._measure(c, at) for c in checks), return_exceptions=True)
        for check, result in zip(checks, results, strict=True):
            name = check.config.name
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                reason = str(result) or type(result).__name__
                outcome = "no_data" if isinstance(result, Blind) else "error"
                check.blind(reason)
                self._log.warning("poll.blind", check=name, outcome=outcome, reason=reason)
            else:
                canary, baseline = result
                check.observe(canary, baseline)
                outcome = "ok"
            if self.metrics is not None:
                self.metrics.polls.labels(check=name, outcome=outcome).inc()

    # -- queries -----------------------------------------------------------------------------------

    def _values(self, version: str, interval: float | None = None) -> dict[str, str]:
        """Template values for one arm; built once per (version, interval), so never mutate one."""
        values = self._values_cache.get((version, interval))
        if values is None:
            e = self.deployment.event
            values = dict(e.labels)
            values.update(
                service=e.service,
                environment=e.environment,
                version=version,
                baseline_version=e.baseline_version or "",
                interval=format_duration(interval or self.policy.interval),
            )
            self._values_cache[(version, interval)] = values
        return values

    async def _all(self, jobs: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        """``asyncio.gather(*jobs)``; inline (in order, no tasks) when the providers are immediate.
        There a job that raises ends it, and the jobs not started yet are closed unawaited."""
        if not self._inline:
            return list(await asyncio.gather(*jobs))
        results: list[Any] = []
        try:
            for job in jobs:
                results.append(await job)
        finally:
            for job in jobs[len(results) + 1 :]:
                job.close()
        return results

    def _arms(self, check: Check) -> list[tuple[str, str]]:
        e = self.deployment.event
        arms = [("canary", e.version)]
        if check.config.compare == "baseline":
            if not e.baseline_version:
                raise Blind(
                    "no baseline version known (the event carried none and no earlier version of "
                    "this service and environment passed)"
                )
            arms.append(("baseline", e.baseline_version))
        return arms

    def _measure_inline(self, check: Check, at: float) -> tuple[Any, Any] | Exception:
        """:meth:`_measure` for immediate providers, as ``poll``'s gather sees it: synchronous
        (``query_now``), no timeout (nothing can hang), an exception returned rather than raised.
        No ``check`` log binding either: a provider answering from memory logs nothing, and the
        Watch names the check in its own lines."""
        try:
            arms, queries = self._plan(check)
            provider: Any = self.providers[check.config.provider]
            interval = self.policy.interval
            return self._interpret(
                check, arms, [provider.query_now(q, at=at, interval=interval) for q in queries]
            )
        except Exception as exc:
            return exc

    async def _measure(self, check: Check, at: float) -> tuple[Any, Any]:
        """One poll's numbers for ``check``: (canary, baseline or None)."""
        structlog.contextvars.bind_contextvars(check=check.config.name)
        try:
            return await asyncio.wait_for(self._measure_arms(check, at), self.policy.poll_timeout)
        except TimeoutError as exc:
            raise TemporaryError(
                f"provider {check.config.provider} did not answer within "
                f"{format_duration(self.policy.poll_timeout)}"
            ) from exc

    async def _measure_arms(self, check: Check, at: float) -> tuple[Any, Any]:
        arms, queries = self._plan(check)
        provider, name = self.providers[check.config.provider], check.config.provider
        answers = await asyncio.gather(*(self._query(provider, name, q, at) for q in queries))
        return self._interpret(check, arms, list(answers))

    def _plan(self, check: Check) -> tuple[list[tuple[str, str]], list[str]]:
        """The arms a poll of ``check`` measures and the rendered queries it asks, in order: for a
        ratio check bad and total per arm, else one query per arm. The same at every poll."""
        plan = self._plans.get(check.config.name)
        if plan is None:
            plan = self._plans[check.config.name] = self._make_plan(check)
        return plan

    def _make_plan(self, check: Check) -> tuple[list[tuple[str, str]], list[str]]:
        arms = self._arms(check)
        cfg = check.config
        if isinstance(check, RatioCheck):
            assert cfg.bad is not None and cfg.total is not None
            return arms, [
                self._render(check, f"{arm}.{part}", template, self._values(version))
                for arm, version in arms
                for part, template in (("bad", cfg.bad), ("total", cfg.total))
            ]
        assert cfg.query is not None
        return arms, [self._render(check, arm, cfg.query, self._values(version)) for arm, version in arms]

    def _interpret(
        self, check: Check, arms: list[tuple[str, str]], answers: list[list[Sample]]
    ) -> tuple[Any, Any]:
        """The providers' answers to :meth:`_plan`'s queries as the check's observation."""
        provider = check.config.provider
        if isinstance(check, RatioCheck):
            sums = [
                (float(got[0].value) if len(got) == 1 else float(sum(s.value for s in got))) if got else None
                for got in answers
            ]
            counts = [
                self._ratio(arm, version, sums[2 * i], sums[2 * i + 1], provider)
                for i, (arm, version) in enumerate(arms)
            ]
            return counts[0], counts[1] if len(counts) == 2 else None
        parsed = []
        for (arm, version), got in zip(arms, answers, strict=True):
            if not got:
                raise Blind(f"no data for {arm} ({version}) from provider {provider}")
            parsed.append(_buckets(got) if isinstance(check, HistogramCheck) else _mean(got))
        return parsed[0], parsed[1] if len(parsed) == 2 else None

    @staticmethod
    def _ratio(arm: str, version: str, bad: float | None, total: float | None, provider: str) -> RatioCounts:
        if total is None:
            raise Blind(f"no data for {arm} ({version}) from provider {provider}")
        # PromQL's sum() over no 5xx series is an empty answer: with traffic present it means 0
        return RatioCounts(bad=bad or 0.0, total=total)

    def _render(self, check: Check, key: str, template: str, values: dict[str, str]) -> str:
        """The rendered query, once per template and arm: the values never change during a Watch
        (they are cached objects, hence the id in the key)."""
        cache_key = (check.config.provider, template, id(values))
        query = self._rendered.get(cache_key)
        if query is None:
            query = render(template, values, self.providers[check.config.provider].escape)
            self._rendered[cache_key] = query
        check.queries[key] = query
        return query

    async def _sum(
        self,
        check: Check,
        key: str,
        template: str,
        values: dict[str, str],
        at: float,
        interval: float | None = None,
    ) -> float | None:
        provider = self.providers[check.config.provider]
        samples = await self._query(
            provider, check.config.provider, self._render(check, key, template, values), at, interval
        )
        return float(sum(s.value for s in samples)) if samples else None

    async def _query(
        self, provider: MetricsProvider, name: str, query: str, at: float, interval: float | None = None
    ) -> list[Sample]:
        """The provider's answer; an adapter bug blinds the check instead of killing the Watch."""
        started = time.monotonic()
        try:
            return await provider.query(query, at=at, interval=interval or self.policy.interval)
        except (TemporaryError, PermanentError):
            raise
        except Exception as exc:
            self._log.error("provider.crashed", provider=name, error=repr(exc))
            raise TemporaryError(f"provider {name} failed: {exc!r}") from exc
        finally:
            self._log.debug("provider.query", provider=name, seconds=time.monotonic() - started)

    # -- the reference before the deploy -------------------------------------------------------------

    async def _fetch_reference(self, check: Check) -> None:
        """The same query over the window before the deploy. A failure leaves the check without a
        reference (blind for ``before``; a histogram then takes its edges from the first poll)."""
        cfg = check.config
        e = self.deployment.event
        version = e.baseline_version or e.version
        try:
            if isinstance(check, RatioCheck):
                check.set_reference(await self._reference_intervals(check, version))
            elif isinstance(check, HistogramCheck):
                check.set_reference(await self._reference_histograms(check, version))
            elif isinstance(check, GaugeCheck):
                check.set_reference(await self._reference_values(check, version))
        except (Blind, TemporaryError, PermanentError) as exc:
            log.warning("reference.unavailable", check=cfg.name, reason=str(exc))
            check.set_reference(None)

    async def _reference_intervals(self, check: RatioCheck, version: str) -> list[RatioCounts]:
        """Per-interval counts over the window before the deploy."""
        cfg = check.config
        assert cfg.bad is not None and cfg.total is not None
        values = self._values(version)

        async def counts(at: float) -> RatioCounts | None:
            bad = await self._sum(check, "before.bad", cfg.bad or "", values, at)
            total = await self._sum(check, "before.total", cfg.total or "", values, at)
            return None if total is None else RatioCounts(bad or 0.0, total)

        return await self._history(check, counts)

    async def _reference_values(self, check: GaugeCheck, version: str) -> list[float]:
        """A gauge's values over the window before the deploy, newest first."""
        return await self._reference_answers(check, version, _mean)

    async def _reference_histograms(self, check: HistogramCheck, version: str) -> list[Buckets]:
        """Per-interval bucket counts over the window before the deploy."""
        return await self._reference_answers(check, version, _buckets)

    async def _reference_answers(
        self, check: Check, version: str, read: Callable[[list[Sample]], T]
    ) -> list[T]:
        """The check's single query over the window before the deploy, each answer ``read``."""
        cfg = check.config
        assert cfg.query is not None
        provider = self.providers[cfg.provider]
        query = self._render(check, "before", cfg.query, self._values(version))

        async def one(at: float) -> T | None:
            got = await self._query(provider, cfg.provider, query, at)
            return read(got) if got else None

        return await self._history(check, one)

    async def _history(self, check: Check, fetch: Callable[[float], Awaitable[T | None]]) -> list[T]:
        """``fetch`` at each poll time of the window before the deploy, newest first, at most
        MAX_REFERENCE_POLLS of them, a few queries at a time to spare the provider. Times without
        an answer are left out; none at the newest means no history at all (a new service, a query
        for the new version only), and the rest is not asked."""
        count = min(MAX_REFERENCE_POLLS, max(1, int(check.config.before_window // self.policy.interval)))
        gate = asyncio.Semaphore(4)

        async def one(j: int) -> T | None:
            async with gate:
                try:
                    return await fetch(self.deployment.created_at - j * self.policy.interval)
                except (TemporaryError, PermanentError):
                    return None

        newest = await one(0)
        if newest is None:
            return []
        found = await self._all([one(j) for j in range(1, count)])
        return [newest, *(x for x in found if x is not None)]


def _mean(samples: list[Sample]) -> float:
    """A gauge query should aggregate itself; several series are averaged, not summed."""
    return float(sum(s.value for s in samples) / len(samples))


def _buckets(samples: list[Sample]) -> Buckets:
    """Per-``le`` sums of a histogram query's series (cumulative bucket counts)."""
    out: Buckets = {}
    for s in samples:
        # Prometheus names a bucket's bound `le`; Datadog keeps it as the tag `upper_bound`
        le = s.labels.get("le", s.labels.get("upper_bound"))
        if le is None:
            raise Blind("the histogram query returned a series without an `le` label (use sum by (le))")
        try:
            bound = math.inf if le.lstrip("+").lower() == "inf" else float(le)
        except ValueError:
            raise Blind(f"the histogram query returned le={le!r}, which is not a number") from None
        out[bound] = out.get(bound, 0.0) + s.value
    return out
