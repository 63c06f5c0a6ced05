"""Owns the Watch tasks: starts one per baking deployment, resumes them after a restart, finishes
interrupted rollbacks, and stops them all within a bound on shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from watchdog.actions import ROLLBACK_OF_LABEL, Actions
from watchdog.clock import Clock
from watchdog.config.models import PolicyConfig, WatchdogConfig, format_duration
from watchdog.errors import StateConflict
from watchdog.metrics import WatchdogMetrics
from watchdog.model import AuditEntry, CheckReport, DeployEvent, Deployment, State
from watchdog.ports import MetricsProvider, Notification, NotificationKind
from watchdog.store import Store
from watchdog.tasks import TaskGroup
from watchdog.watch import Watch

log = structlog.get_logger("watchdog.supervisor")


class BlindWatch:
    """Notices when a deployment's checks have gone blind for the policy's ``blind_after``: a
    provider that is down, a query that matches nothing. Said once per blind stretch, so an outage
    pages once, not at every poll."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy
        self.seen: dict[str, int] = {}
        self.streak: dict[str, int] = {}
        self.blind: list[str] = []
        self.told = False

    def after_poll(self, deployment: Deployment, reports: tuple[CheckReport, ...]) -> str | None:
        for r in reports:
            count = int(r.statistics.get("blind_polls", 0))
            self.streak[r.name] = self.streak.get(r.name, 0) + 1 if count > self.seen.get(r.name, 0) else 0
            self.seen[r.name] = count
        longest = max(self.streak.values(), default=0)
        if longest == 0:
            self.told = False
        if self.policy.blind_after is None or self.told:
            return None
        seconds = longest * self.policy.interval
        if seconds < self.policy.blind_after:
            return None
        self.told = True
        self.blind = [name for name, n in self.streak.items() if n]
        return (
            f"blind: {deployment.service}'s checks ({', '.join(self.blind)}) have had no data for "
            f"{format_duration(seconds)}"
        )


@dataclass
class Supervisor:
    config: WatchdogConfig
    store: Store
    providers: Mapping[str, MetricsProvider]
    actions: Actions
    clock: Clock
    metrics: WatchdogMetrics
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.group = TaskGroup("watch")
        self.watches: dict[str, asyncio.Task[None]] = {}
        self.started = False

    def policy(self, name: str | None) -> PolicyConfig | None:
        return next((p for p in self.config.policies if p.name == name), None)

    async def start(self) -> None:
        """Resume what a previous run left: baking deployments and interrupted rollbacks."""
        for deployment in await self.store.active():
            policy = self.policy(deployment.policy)
            if policy is None:
                await self._orphan(deployment)
            elif deployment.state is State.ROLLING_BACK:
                log.warning("rollback.resumed", deployment_id=deployment.id)
                await self.store.add_audit(
                    deployment.id,
                    AuditEntry(
                        self.clock.now(),
                        "watchdog",
                        "rollback.resumed",
                        "the daemon stopped during this rollback; re-sending the same key",
                    ),
                )
                self._spawn(deployment, self._resume_rollback(deployment, policy))
            elif deployment.state is State.BAKING:
                log.info("watch.resumed", deployment_id=deployment.id, polls=deployment.polls)
                self._spawn(deployment, self._watch(deployment, policy))
        self.started = True
        await self.refresh_gauges()

    async def submit(self, event: DeployEvent) -> tuple[Deployment, bool]:
        """Record a deploy event (idempotent by its id) and start watching it if it is new."""
        fields = {  # labels first: a label named `service` must not outrank the real service
            **event.labels,
            "service": event.service,
            "environment": event.environment,
            "source": event.source,
            "strategy": event.strategy or "",
        }
        policy = self.config.policy_for(fields)
        if event.baseline_version is None:
            previous = await self.store.last_passed_version(event.service, event.environment)
            if previous is not None and previous != event.version:
                event = dataclasses.replace(event, baseline_version=previous)
        rolled_back = await self._rolled_back_to(event)
        if rolled_back is not None:
            event = dataclasses.replace(event, labels={**event.labels, ROLLBACK_OF_LABEL: rolled_back})
        now = self.clock.now()
        if policy is None:
            reason = (
                f"no policy matches service={event.service!r} environment={event.environment!r}; "
                "recorded, not watched"
            )
            deployment, created = await self.store.create(event, None, State.ABORTED, now, reason)
        else:
            deployment, created = await self.store.create(
                event, policy.name, State.BAKING, now, f"policy {policy.name}"
            )
            if created:
                self._spawn(deployment, self._watch(deployment, policy))
                await self._supersede_older(deployment)
        if created:
            log.info(
                "deployment.created",
                deployment_id=deployment.id,
                service=event.service,
                version=event.version,
                policy=policy.name if policy else None,
            )
            await self.refresh_gauges()
        return deployment, created

    async def _supersede_older(self, newer: Deployment) -> None:
        """A newer deploy of the same service and environment ends the bake of an older one: the
        older version no longer runs alone, so its numbers decide nothing. It is closed as
        superseded and its Watch cancelled, never rolled back. The compare-and-set from baking or
        paused leaves alone one that concluded or started rolling back meanwhile; the cancel only
        follows a won compare-and-set, so it never interrupts a rollback. Only deployments created
        before ``newer`` (``active()`` lists in creation order) are candidates, so two deploys
        arriving together cannot supersede each other."""
        for older in await self.store.active():
            if older.id == newer.id:
                break
            same = (older.service, older.environment) == (newer.service, newer.environment)
            if not same or older.state not in (State.BAKING, State.PAUSED):
                continue
            now = self.clock.now()
            reason = f"superseded by deployment {newer.id} (version {newer.version})"
            try:
                await self.store.transition(
                    older.id,
                    (State.BAKING, State.PAUSED),
                    State.SUPERSEDED,
                    now,
                    reason=reason,
                    decided=True,
                    audit=AuditEntry(now, "watchdog", "superseded", reason),
                )
            except StateConflict:
                continue
            task = self.watches.get(older.id)
            if task is not None:
                task.cancel()
            log.info("deployment.superseded", deployment_id=older.id, by=newer.id, version=newer.version)

    async def _rolled_back_to(self, event: DeployEvent) -> str | None:
        """The id of the deployment this event undoes, if it deploys the baseline that the newest
        deployment of the same service and environment was rolled back to."""
        page = await self.store.page(service=event.service, environment=event.environment, limit=1)
        last = page.items[0] if page.items else None
        if (
            last is not None
            and last.state in (State.ROLLED_BACK, State.ROLLING_BACK, State.ROLLBACK_FAILED)
            and last.event.baseline_version == event.version
            and last.event.event_id != event.event_id
        ):
            return last.id
        return None

    def _spawn(self, deployment: Deployment, coro: Coroutine[Any, Any, None]) -> None:
        task = self.group.spawn(coro, deployment.id)
        self.watches[deployment.id] = task
        self.metrics.active_watches.set(len(self.watches))

        def forget(_: asyncio.Task[None]) -> None:
            self.watches.pop(deployment.id, None)
            self.metrics.active_watches.set(len(self.watches))

        task.add_done_callback(forget)

    async def _watch(self, deployment: Deployment, policy: PolicyConfig) -> None:
        blindness = BlindWatch(policy)

        async def persist(polls: int, reports: tuple[CheckReport, ...], state: dict[str, object]) -> None:
            await self.store.record_poll(deployment.id, polls, reports, dict(state), self.clock.now())
            headline = blindness.after_poll(deployment, reports)
            if headline is not None:
                current = await self.store.get(deployment.id) or deployment
                await self.actions.notify(
                    policy,
                    Notification(
                        NotificationKind.BLIND,
                        current,
                        headline,
                        "Still baking; nothing rolled back.",
                        tuple(r for r in reports if r.name in blindness.blind),
                    ),
                )

        watch = Watch(
            deployment=deployment,
            policy=policy,
            providers=self.providers,
            clock=self.clock,
            stop=self.stop,
            metrics=self.metrics,
            on_poll=persist,
        )
        decision = await watch.run()
        if decision is None:
            return  # stopped: the deployment stays baking and resumes on the next start
        current = await self.store.get(deployment.id)
        if current is None or current.state not in (State.BAKING, State.PAUSED):
            return  # an operator or a newer deploy decided first
        try:
            await self.actions.conclude(current, policy, decision)
        except StateConflict as exc:  # superseded or decided by an operator since the read above
            log.info("watch.preempted", deployment_id=deployment.id, reason=str(exc))
            return
        await self.refresh_gauges()

    async def _resume_rollback(self, deployment: Deployment, policy: PolicyConfig) -> None:
        await self.actions.execute_rollback(deployment, policy, actor="watchdog")
        await self.refresh_gauges()

    async def _orphan(self, deployment: Deployment) -> None:
        """A deployment whose policy was removed from the config: stop it visibly, do nothing."""
        now = self.clock.now()
        reason = f"policy {deployment.policy!r} is no longer in the config"
        await self.store.transition(
            deployment.id,
            (State.BAKING, State.PAUSED, State.ROLLING_BACK),
            State.ABORTED,
            now,
            reason=reason,
            decided=True,
            audit=AuditEntry(now, "watchdog", "aborted", reason),
        )
        log.warning("watch.orphaned", deployment_id=deployment.id, reason=reason)

    async def refresh_gauges(self) -> None:
        counts = await self.store.count_by_state()
        for state in State:
            self.metrics.deployments.labels(state=state.value).set(counts.get(state.value, 0))

    def healthy(self) -> bool:
        return self.started and not self.stop.is_set()

    async def shutdown(self, timeout: float) -> None:
        """Stop every Watch: they wake at once, finish the poll in flight, and return. Stragglers
        (a rollback in progress) get ``timeout`` seconds, then are cancelled; a cancelled rollback
        stays ``rolling_back`` and is resumed with the same idempotency key on the next start."""
        self.stop.set()
        if not await self.group.wait(timeout):
            log.warning("shutdown.cancelling", tasks=len(self.group.tasks))
            await self.group.cancel_all()
