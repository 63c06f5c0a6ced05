"""Acting on a verdict: roll back exactly once, then tell people.

Exactly once rests on two things. The move to ``rolling_back`` is a compare-and-set in the store, so
of two deciders only one starts a rollback; and that move (the intent, with the idempotency key) is
committed before the adapter is called, so after a crash the supervisor finds ``rolling_back`` and
re-sends the same key instead of starting a second, different rollback.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from watchdog.analysis import Decision
from watchdog.clock import Clock
from watchdog.config.models import PolicyConfig
from watchdog.errors import AdapterError, StateConflict
from watchdog.metrics import WatchdogMetrics
from watchdog.model import AuditEntry, Deployment, State, Verdict
from watchdog.ports import (
    Notification,
    NotificationKind,
    Notifier,
    RollbackRequest,
    RollbackTarget,
)
from watchdog.retry import RetryPolicy
from watchdog.store import Store

log = structlog.get_logger("watchdog.actions")

DECIDABLE = (State.BAKING, State.PAUSED)
ROLLBACK_OF_LABEL = "watchdog.rollback_of"
"""Label the supervisor puts on a deploy that puts back the baseline of a rolled-back deployment
(the CD tool reporting the rollback itself): it is watched, but never rolled back automatically."""


@dataclass
class Actions:
    store: Store
    rollbacks: Mapping[str, RollbackTarget]
    notifiers: Mapping[str, Notifier]
    clock: Clock
    metrics: WatchdogMetrics
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    async def conclude(self, deployment: Deployment, policy: PolicyConfig, decision: Decision) -> Deployment:
        """Turn a Watch's final decision into a state, a rollback if called for, and notifications."""
        self.metrics.decisions.labels(verdict=decision.verdict.value).inc()
        if decision.verdict is Verdict.FAIL:
            return await self._fail(deployment, policy, decision)
        to = State.PASSED if decision.verdict is Verdict.PASS else State.INCONCLUSIVE
        kind = NotificationKind.PASSED if to is State.PASSED else NotificationKind.INCONCLUSIVE
        done = await self.store.transition(
            deployment.id,
            DECIDABLE,
            to,
            self.clock.now(),
            verdict=decision.verdict,
            reason=decision.reason,
            decided=True,
            audit=AuditEntry(
                self.clock.now(), "watchdog", f"verdict.{decision.verdict.value}", decision.reason
            ),
        )
        headline = (
            f"{done.service} {done.version} passed its bake in {done.environment or 'its environment'}"
            if to is State.PASSED
            else f"No verdict for {done.service} {done.version}: the watchdog could not see enough"
        )
        await self.notify(policy, Notification(kind, done, headline, "No action taken.", decision.reports))
        return done

    async def _fail(self, deployment: Deployment, policy: PolicyConfig, decision: Decision) -> Deployment:
        now = self.clock.now()
        rollback_of = deployment.event.labels.get(ROLLBACK_OF_LABEL)
        if policy.dry_run or policy.rollback is None or rollback_of:
            if rollback_of:
                why = (
                    f"this deploy is itself the rollback of deployment {rollback_of}, "
                    "and a rollback of a rollback is never automatic"
                )
            else:
                why = "dry run" if policy.dry_run else "no rollback target configured"
            done = await self.store.transition(
                deployment.id,
                DECIDABLE,
                State.ABORTED,
                now,
                verdict=Verdict.FAIL,
                reason=f"{why}: would have rolled back: {decision.reason}",
                decided=True,
                audit=AuditEntry(now, "watchdog", "rollback.skipped", why),
            )
            self.metrics.rollbacks.labels(outcome="dry_run").inc()
            await self.notify(
                policy,
                Notification(
                    NotificationKind.WOULD_ROLL_BACK,
                    done,
                    f"{done.service} {done.version} is worse than {self._baseline(done)}",
                    f"{why.capitalize()}: would have rolled back; nothing was changed.",
                    decision.reports,
                ),
            )
            return done
        target = policy.rollback
        intent = {
            "target": target,
            "status": "started",
            "idempotency_key": f"{deployment.id}:rollback",
            "started_at": now,
        }
        started = await self.store.transition(
            deployment.id,
            DECIDABLE,
            State.ROLLING_BACK,
            now,
            verdict=Verdict.FAIL,
            reason=decision.reason,
            decided=True,
            rollback=intent,
            audit=AuditEntry(now, "watchdog", "rollback.started", f"through {target}"),
        )
        return await self.execute_rollback(started, policy, actor="watchdog")

    async def execute_rollback(
        self,
        deployment: Deployment,
        policy: PolicyConfig,
        *,
        actor: str,
    ) -> Deployment:
        """Call the adapter for a deployment already in ``rolling_back`` (its intent stored)."""
        if deployment.state is not State.ROLLING_BACK:
            raise StateConflict(f"deployment {deployment.id} is {deployment.state.value}, not rolling_back")
        target_name = str(deployment.rollback.get("target") or policy.rollback)
        target = self.rollbacks[target_name]
        key = str(deployment.rollback.get("idempotency_key") or f"{deployment.id}:rollback")
        request = RollbackRequest(deployment, key, deployment.reason, actor)
        log.info("rollback.started", target=target_name, idempotency_key=key)
        started = time.monotonic()
        try:
            result = await self.retry.call(lambda: target.rollback(request))
        except Exception as exc:
            failure = str(exc) or type(exc).__name__
            if not isinstance(exc, AdapterError):
                log.error("rollback.crashed", target=target_name, error=repr(exc), exc_info=exc)
                failure = f"rollback adapter {target_name} crashed: {exc!r}"
            now = self.clock.now()
            info = {**deployment.rollback, "status": "failed", "error": failure, "finished_at": now}
            details = getattr(exc, "details", None)
            if details:
                info["details"] = details
            done = await self.store.transition(
                deployment.id,
                (State.ROLLING_BACK,),
                State.ROLLBACK_FAILED,
                now,
                rollback=info,
                audit=AuditEntry(now, actor, "rollback.failed", failure),
            )
            self.metrics.rollbacks.labels(outcome="failed").inc()
            self.metrics.rollback_duration.observe(time.monotonic() - started)
            log.error("rollback.failed", target=target_name, error=failure)
            await self.notify(
                policy,
                Notification(
                    NotificationKind.ROLLBACK_FAILED,
                    done,
                    f"Rollback of {done.service} {done.version} FAILED: act now",
                    f"Tried to roll back through {target_name}: {failure}",
                    done.checks,
                ),
            )
            return done
        now = self.clock.now()
        info = {
            **deployment.rollback,
            "status": "succeeded",
            "detail": result.detail,
            "data": result.data,
            "finished_at": now,
        }
        done = await self.store.transition(
            deployment.id,
            (State.ROLLING_BACK,),
            State.ROLLED_BACK,
            now,
            rollback=info,
            audit=AuditEntry(now, actor, "rollback.succeeded", result.detail),
        )
        self.metrics.rollbacks.labels(outcome="succeeded").inc()
        self.metrics.rollback_duration.observe(time.monotonic() - started)
        log.info("rollback.succeeded", target=target_name, detail=result.detail)
        await self.notify(
            policy,
            Notification(
                NotificationKind.ROLLED_BACK,
                done,
                f"Rolled back {done.service} {done.version} in {done.environment or 'its environment'}",
                f"Rolled back to {self._baseline(done)} through {target_name}: {result.detail}",
                done.checks,
            ),
        )
        return done

    async def notify(self, policy: PolicyConfig, notification: Notification) -> None:
        """Send to every notifier of the policy; a failing notifier is logged and counted, never
        allowed to change the deployment's outcome or stop the others."""
        for name in policy.notify:
            notifier = self.notifiers[name]
            try:
                await self.retry.call(lambda n=notifier: n.send(notification))  # type: ignore[misc]
            except Exception as exc:
                self.metrics.notifications.labels(notifier=name, outcome="failed").inc()
                log.error("notify.failed", notifier=name, kind=notification.kind.value, error=str(exc))
            else:
                self.metrics.notifications.labels(notifier=name, outcome="sent").inc()
                log.info("notify.sent", notifier=name, kind=notification.kind.value)

    @staticmethod
    def _baseline(deployment: Deployment) -> str:
        return deployment.event.baseline_version or "the previous version"
