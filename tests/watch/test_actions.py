"""Acting on verdicts: the rollback runs exactly once, its intent is stored first, and failures of
adapters or notifiers end in states a person can act on."""

from __future__ import annotations

import asyncio

import pytest

from watchdog.actions import Actions
from watchdog.analysis import Decision
from watchdog.clock import VirtualClock
from watchdog.config.models import PolicyConfig
from watchdog.errors import PermanentError, StateConflict, TemporaryError
from watchdog.metrics import WatchdogMetrics
from watchdog.model import DeployEvent, State, Verdict
from watchdog.ports import NotificationKind
from watchdog.retry import RetryPolicy
from watchdog.store import SqliteStore
from watchdog.testing import FakeNotifier, FakeRollback

CHECK = {"name": "errors", "type": "ratio", "provider": "prom", "bad": "b", "total": "t"}


def policy(**extra: object) -> PolicyConfig:
    return PolicyConfig.model_validate(
        {"name": "p", "rollback": "hook", "notify": ["slack"], "checks": [CHECK], **extra}
    )


@pytest.fixture
async def store():
    s = SqliteStore("sqlite:///:memory:")
    await s.open()
    yield s
    await s.aclose()


async def setup(
    store: SqliteStore, rollback: FakeRollback | None = None, notifier: FakeNotifier | None = None
):
    event = DeployEvent(
        source="generic", event_id="e1", service="checkout", version="v2", baseline_version="v1"
    )
    deployment, _ = await store.create(event, "p", State.BAKING, 1000.0)
    metrics = WatchdogMetrics()
    actions = Actions(
        store=store,
        rollbacks={"hook": rollback or FakeRollback()},
        notifiers={"slack": notifier or FakeNotifier()},
        clock=VirtualClock(2000.0),
        metrics=metrics,
        retry=RetryPolicy(attempts=3, base=0.001, max_wait=0.01),
    )
    return deployment, actions, metrics


FAIL = Decision(Verdict.FAIL, "errors 10 % vs 0.5 %", ())


async def test_fail_rolls_back_once_and_records_intent_then_outcome(store: SqliteStore) -> None:
    rollback, notifier = FakeRollback(), FakeNotifier()
    deployment, actions, metrics = await setup(store, rollback, notifier)
    done = await actions.conclude(deployment, policy(), FAIL)
    assert done.state is State.ROLLED_BACK and done.verdict is Verdict.FAIL
    assert len(rollback.requests) == 1
    assert rollback.requests[0].idempotency_key == f"{deployment.id}:rollback"
    assert [a.action for a in done.audit] == ["created", "rollback.started", "rollback.succeeded"]
    assert done.rollback["status"] == "succeeded"
    assert [n.kind for n in notifier.sent] == [NotificationKind.ROLLED_BACK]
    assert metrics.registry.get_sample_value("watchdog_rollbacks_total", {"outcome": "succeeded"}) == 1


async def test_a_second_decider_cannot_start_a_second_rollback(store: SqliteStore) -> None:
    """Two concurrent failing decisions (a race between a Watch and an operator): one rollback."""
    rollback = FakeRollback()
    deployment, actions, _ = await setup(store, rollback)
    results = await asyncio.gather(
        actions.conclude(deployment, policy(), FAIL),
        actions.conclude(deployment, policy(), FAIL),
        return_exceptions=True,
    )
    assert len(rollback.requests) == 1
    assert sum(isinstance(r, StateConflict) for r in results) == 1, results


async def test_temporary_failures_are_retried_with_the_same_key(store: SqliteStore) -> None:
    rollback = FakeRollback(failures=[TemporaryError("503"), TemporaryError("timeout")])
    deployment, actions, _ = await setup(store, rollback)
    done = await actions.conclude(deployment, policy(), FAIL)
    assert done.state is State.ROLLED_BACK
    assert len({r.idempotency_key for r in rollback.requests}) == 1 and len(rollback.requests) == 3


async def test_a_permanent_failure_is_not_retried_and_is_notified_loudly(store: SqliteStore) -> None:
    rollback, notifier = (
        FakeRollback(failures=[PermanentError("403 Forbidden: token expired")]),
        FakeNotifier(),
    )
    deployment, actions, _ = await setup(store, rollback, notifier)
    done = await actions.conclude(deployment, policy(), FAIL)
    assert done.state is State.ROLLBACK_FAILED
    assert len(rollback.requests) == 1
    assert done.rollback["error"] == "403 Forbidden: token expired"
    assert notifier.sent[0].kind is NotificationKind.ROLLBACK_FAILED
    assert "403 Forbidden" in notifier.sent[0].action


async def test_retries_exhausted_end_in_rollback_failed(store: SqliteStore) -> None:
    rollback = FakeRollback(failures=[TemporaryError("503")] * 5)
    deployment, actions, _ = await setup(store, rollback)
    done = await actions.conclude(deployment, policy(), FAIL)
    assert done.state is State.ROLLBACK_FAILED and len(rollback.requests) == 3


async def test_a_crashing_adapter_ends_in_rollback_failed_not_stuck(store: SqliteStore) -> None:
    rollback = FakeRollback(failures=[ZeroDivisionError("bug")])
    deployment, actions, _ = await setup(store, rollback)
    done = await actions.conclude(deployment, policy(), FAIL)
    assert done.state is State.ROLLBACK_FAILED and "crashed" in done.rollback["error"]


async def test_dry_run_decides_and_notifies_without_calling_the_adapter(store: SqliteStore) -> None:
    rollback, notifier = FakeRollback(), FakeNotifier()
    deployment, actions, _ = await setup(store, rollback, notifier)
    done = await actions.conclude(deployment, policy(dry_run=True), FAIL)
    assert rollback.requests == []
    assert done.state is State.ABORTED and done.verdict is Verdict.FAIL
    assert done.reason.startswith("dry run: would have rolled back")
    assert notifier.sent[0].kind is NotificationKind.WOULD_ROLL_BACK


async def test_a_failing_notifier_never_changes_the_outcome(store: SqliteStore) -> None:
    notifier = FakeNotifier(failures=[PermanentError("channel_not_found")])
    deployment, actions, metrics = await setup(store, notifier=notifier)
    done = await actions.conclude(deployment, policy(), FAIL)
    assert done.state is State.ROLLED_BACK
    assert (
        metrics.registry.get_sample_value(
            "watchdog_notifications_total", {"notifier": "slack", "outcome": "failed"}
        )
        == 1
    )


async def test_an_interrupted_rollback_is_resent_with_the_same_key(store: SqliteStore) -> None:
    """A crash after the intent was stored: execute_rollback on the rolling_back deployment sends
    the key stored with the intent, and a finished rollback cannot be executed again."""
    rollback = FakeRollback()
    deployment, actions, _ = await setup(store, rollback)
    intent = {"target": "hook", "status": "started", "idempotency_key": f"{deployment.id}:rollback"}
    stuck = await store.transition(deployment.id, [State.BAKING], State.ROLLING_BACK, 1500.0, rollback=intent)
    done = await actions.execute_rollback(stuck, policy(), actor="watchdog")
    assert done.state is State.ROLLED_BACK
    assert rollback.requests[0].idempotency_key == f"{deployment.id}:rollback"
    with pytest.raises(StateConflict):
        await actions.execute_rollback(done, policy(), actor="watchdog")
    assert len(rollback.requests) == 1


async def test_pass_and_inconclusive_are_stored_and_notified(store: SqliteStore) -> None:
    notifier = FakeNotifier()
    deployment, actions, _ = await setup(store, notifier=notifier)
    done = await actions.conclude(deployment, policy(), Decision(Verdict.INCONCLUSIVE, "blind", ()))
    assert done.state is State.INCONCLUSIVE and done.decided_at == 2000.0
    assert notifier.sent[0].kind is NotificationKind.INCONCLUSIVE
