"""Acting on a verdict (watchdog.actions.Actions): roll back exactly once, with the stored
idempotency key; dry runs and policies without a target never touch the adapter; failures of the
adapter end in rollback_failed and a loud notification; a failing notifier changes nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from watchdog.actions import Actions
from watchdog.analysis import Decision
from watchdog.clock import VirtualClock
from watchdog.config.models import PolicyConfig
from watchdog.errors import PermanentError, StateConflict, TemporaryError
from watchdog.metrics import WatchdogMetrics
from watchdog.model import CheckReport, DeployEvent, Deployment, State, Verdict
from watchdog.ports import Notification, NotificationKind, RollbackRequest, RollbackResult
from watchdog.retry import RetryPolicy
from watchdog.store.sqlite import SqliteStore

NOW = 1_700_000_000.0
REPORTS = (CheckReport("errors", Verdict.FAIL, "5.1 % vs 0.4 %", {"e_value": 240.0}),)


@dataclass
class FakeRollback:
    """A rollback target that records each request and fails as told (errors raised in turn)."""

    errors: list[BaseException] = field(default_factory=list)
    requests: list[RollbackRequest] = field(default_factory=list)

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        self.requests.append(request)
        if self.errors:
            raise self.errors.pop(0)
        return RollbackResult("rolled back to v1", {"job": 42})

    async def aclose(self) -> None:
        return None


@dataclass
class FakeNotifier:
    """A notifier that records what it is sent, or always fails."""

    fail: BaseException | None = None
    sent: list[Notification] = field(default_factory=list)

    async def send(self, notification: Notification) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(notification)

    async def aclose(self) -> None:
        return None


@dataclass
class World:
    actions: Actions
    store: SqliteStore
    hook: FakeRollback
    notifiers: dict[str, FakeNotifier]
    metrics: WatchdogMetrics

    async def deployment(self, state: State = State.BAKING) -> Deployment:
        event = DeployEvent("generic", "evt-1", "checkout", "v2", "prod", baseline_version="v1")
        d, _ = await self.store.create(event, "checkout-prod", State.BAKING, NOW)
        if state is not State.BAKING:
            d = await self.store.transition(d.id, (State.BAKING,), state, NOW)
        return d

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def policy(**overrides: Any) -> PolicyConfig:
    data: dict[str, Any] = {
        "name": "checkout-prod",
        "rollback": "hook",
        "notify": ["slack", "audit"],
        "checks": [{"name": "errors", "type": "ratio", "provider": "prom", "bad": "b", "total": "t"}],
    }
    data.update(overrides)
    return PolicyConfig.model_validate(data)


FAIL = Decision(Verdict.FAIL, "errors: 5.1 % vs 0.4 %", REPORTS)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = SqliteStore("sqlite:///:memory:")
    await store.open()
    hook = FakeRollback()
    notifiers = {"slack": FakeNotifier(), "audit": FakeNotifier()}
    metrics = WatchdogMetrics()
    actions = Actions(
        store=store,
        rollbacks={"hook": hook},
        notifiers=notifiers,
        clock=VirtualClock(NOW + 60),
        metrics=metrics,
        retry=RetryPolicy(attempts=3, base=0.001, max_wait=0.001),
    )
    try:
        yield World(actions, store, hook, notifiers, metrics)
    finally:
        await store.aclose()


# --- rollback ---------------------------------------------------------------------------------


async def test_failing_verdict_rolls_back_once_with_the_idempotency_key(world: World) -> None:
    """FAIL: the intent is stored, the adapter is called once with `<id>:rollback` and the reason,
    the deployment ends rolled_back with the adapter's result, and every notifier hears of it."""
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(), FAIL)
    assert done.state is State.ROLLED_BACK and done.verdict is Verdict.FAIL
    (request,) = world.hook.requests
    assert request.idempotency_key == f"{d.id}:rollback"
    assert request.reason == FAIL.reason and request.actor == "watchdog"
    assert request.deployment.state is State.ROLLING_BACK, "the intent is committed before the call"
    assert done.rollback["status"] == "succeeded"
    assert done.rollback["idempotency_key"] == f"{d.id}:rollback"
    assert done.rollback["data"] == {"job": 42}
    assert done.decided_at == NOW + 60
    assert [a.action for a in done.audit] == ["created", "rollback.started", "rollback.succeeded"]
    for notifier in world.notifiers.values():
        (n,) = notifier.sent
        assert n.kind is NotificationKind.ROLLED_BACK and n.deployment.id == d.id
    assert world.sample("watchdog_rollbacks_total", outcome="succeeded") == 1.0


async def test_second_decision_on_the_same_deployment_does_not_roll_back_again(world: World) -> None:
    """A second FAIL (another decider, a replayed loop) is a StateConflict; the adapter is not called."""
    d = await world.deployment()
    await world.actions.conclude(d, policy(), FAIL)
    with pytest.raises(StateConflict):
        await world.actions.conclude(d, policy(), FAIL)
    assert len(world.hook.requests) == 1


async def test_racing_decisions_roll_back_exactly_once(world: World) -> None:
    """Two concurrent FAIL decisions on one deployment: one rollback, the other a StateConflict."""
    d = await world.deployment()
    results = await asyncio.gather(
        world.actions.conclude(d, policy(), FAIL),
        world.actions.conclude(d, policy(), FAIL),
        return_exceptions=True,
    )
    assert len(world.hook.requests) == 1
    assert sum(isinstance(r, StateConflict) for r in results) == 1, results
    after = await world.store.get(d.id)
    assert after is not None and after.state is State.ROLLED_BACK


async def test_temporary_failure_is_retried_with_the_same_key(world: World) -> None:
    """A timeout is retried, and the retry carries the same idempotency key (safe to repeat)."""
    world.hook.errors = [TemporaryError("timeout")]
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(), FAIL)
    assert done.state is State.ROLLED_BACK
    assert [r.idempotency_key for r in world.hook.requests] == [f"{d.id}:rollback"] * 2


async def test_permanent_failure_ends_in_rollback_failed_and_is_notified(world: World) -> None:
    """A refused rollback (403) is not retried; the deployment is rollback_failed with the error kept,
    and people are told to act."""
    world.hook.errors = [PermanentError("403 forbidden")]
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(), FAIL)
    assert done.state is State.ROLLBACK_FAILED
    assert len(world.hook.requests) == 1
    assert done.rollback["status"] == "failed" and done.rollback["error"] == "403 forbidden"
    assert [a.action for a in done.audit][-1] == "rollback.failed"
    assert world.notifiers["slack"].sent[0].kind is NotificationKind.ROLLBACK_FAILED
    assert world.sample("watchdog_rollbacks_total", outcome="failed") == 1.0


async def test_adapter_crash_is_contained(world: World) -> None:
    """An adapter bug (not one of our errors) still ends in rollback_failed naming the adapter."""
    world.hook.errors = [ZeroDivisionError("oops")]
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(), FAIL)
    assert done.state is State.ROLLBACK_FAILED
    assert "rollback adapter hook crashed" in done.rollback["error"]


async def test_resumed_rollback_resends_the_stored_key(world: World) -> None:
    """After a crash mid-rollback the supervisor calls execute_rollback on the stored intent: the
    same key and target go out again, never a new one."""
    d = await world.deployment()
    intent = {"target": "hook", "status": "started", "idempotency_key": "stored-key-from-before"}
    d = await world.store.transition(
        d.id, (State.BAKING,), State.ROLLING_BACK, NOW, rollback=intent, reason="why"
    )
    done = await world.actions.execute_rollback(d, policy(), actor="supervisor")
    (request,) = world.hook.requests
    assert (request.idempotency_key, request.actor, request.reason) == (
        "stored-key-from-before",
        "supervisor",
        "why",
    )
    assert done.state is State.ROLLED_BACK


async def test_execute_rollback_needs_rolling_back(world: World) -> None:
    """execute_rollback refuses a deployment whose intent was not stored first."""
    d = await world.deployment()
    with pytest.raises(StateConflict):
        await world.actions.execute_rollback(d, policy(), actor="oncall")
    assert world.hook.requests == []


# --- no rollback ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "why"),
    [({"dry_run": True}, "dry run"), ({"rollback": None}, "no rollback target configured")],
)
async def test_dry_run_or_no_target_never_calls_the_adapter(
    world: World, overrides: dict[str, Any], why: str
) -> None:
    """FAIL under dry run (or without a target): aborted with "would have rolled back", the verdict
    kept as fail, the adapter untouched, people told what would have happened."""
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(**overrides), FAIL)
    assert world.hook.requests == []
    assert done.state is State.ABORTED and done.verdict is Verdict.FAIL
    assert done.reason == f"{why}: would have rolled back: {FAIL.reason}"
    assert world.notifiers["slack"].sent[0].kind is NotificationKind.WOULD_ROLL_BACK
    assert world.sample("watchdog_rollbacks_total", outcome="dry_run") == 1.0


@pytest.mark.parametrize(
    ("verdict", "state", "kind"),
    [
        (Verdict.PASS, State.PASSED, NotificationKind.PASSED),
        (Verdict.INCONCLUSIVE, State.INCONCLUSIVE, NotificationKind.INCONCLUSIVE),
    ],
)
async def test_pass_and_inconclusive_are_recorded_and_notified(
    world: World, verdict: Verdict, state: State, kind: NotificationKind
) -> None:
    """A pass or a blind end is stored with its time and reason and notified; nothing is rolled back."""
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(), Decision(verdict, "bake ended", REPORTS))
    assert (done.state, done.verdict, done.reason, done.decided_at) == (
        state,
        verdict,
        "bake ended",
        NOW + 60,
    )
    assert world.hook.requests == []
    assert world.notifiers["audit"].sent[0].kind is kind
    assert world.sample("watchdog_decisions_total", verdict=verdict.value) == 1.0


async def test_paused_deployment_can_still_be_decided(world: World) -> None:
    """A paused deployment is decidable (an operator's rollback or the bake's end)."""
    d = await world.deployment(State.PAUSED)
    done = await world.actions.conclude(d, policy(), FAIL)
    assert done.state is State.ROLLED_BACK


async def test_terminal_deployment_cannot_be_decided_again(world: World) -> None:
    """An aborted deployment is not decided again (StateConflict), and nothing is sent."""
    d = await world.deployment(State.ABORTED)
    with pytest.raises(StateConflict):
        await world.actions.conclude(d, policy(), Decision(Verdict.PASS, "late", ()))
    assert world.notifiers["slack"].sent == []


# --- notifiers --------------------------------------------------------------------------------


async def test_failing_notifier_does_not_stop_the_others_or_change_the_outcome(world: World) -> None:
    """One notifier down: the rollback still stands, the other notifier still hears, the failure
    is counted."""
    world.notifiers["slack"].fail = PermanentError("slack 404")
    d = await world.deployment()
    done = await world.actions.conclude(d, policy(), FAIL)
    assert done.state is State.ROLLED_BACK
    assert len(world.notifiers["audit"].sent) == 1
    assert world.sample("watchdog_notifications_total", notifier="slack", outcome="failed") == 1.0
    assert world.sample("watchdog_notifications_total", notifier="audit", outcome="sent") == 1.0
