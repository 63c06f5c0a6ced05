"""The supervisor's intake decisions: policies, baselines, and a rollback's own deploy."""

from __future__ import annotations

import asyncio

from watchdog.actions import ROLLBACK_OF_LABEL, Actions
from watchdog.analysis import Decision
from watchdog.clock import VirtualClock
from watchdog.config.models import WatchdogConfig
from watchdog.metrics import WatchdogMetrics
from watchdog.model import DeployEvent, State, Verdict
from watchdog.ports import NotificationKind
from watchdog.retry import RetryPolicy
from watchdog.store import SqliteStore
from watchdog.supervisor import Supervisor
from watchdog.testing import FakeMetricsProvider, FakeNotifier, FakeRollback

CONFIG = WatchdogConfig.model_validate(
    {
        "providers": {"prom": {"type": "prometheus"}},
        "rollback": {"hook": {"type": "http"}},
        "notify": {"slack": {"type": "slack"}},
        "policies": [
            {
                "name": "prod",
                "match": {"environment": "prod"},
                "rollback": "hook",
                "notify": ["slack"],
                "checks": [{"name": "e", "type": "ratio", "provider": "prom", "bad": "b", "total": "t"}],
            }
        ],
    }
)


async def make() -> tuple[Supervisor, SqliteStore, FakeRollback, FakeNotifier]:
    store = SqliteStore("sqlite:///:memory:")
    await store.open()
    rollback, notifier, metrics, clock = FakeRollback(), FakeNotifier(), WatchdogMetrics(), VirtualClock(1000)
    actions = Actions(store, {"hook": rollback}, {"slack": notifier}, clock, metrics, RetryPolicy(attempts=1))
    stop = asyncio.Event()
    stop.set()  # no watch loop runs: these tests drive decisions by hand
    provider = FakeMetricsProvider(lambda q, at: None)
    supervisor = Supervisor(CONFIG, store, {"prom": provider}, actions, clock, metrics, stop)
    return supervisor, store, rollback, notifier


def event(event_id: str, version: str, baseline: str | None = None, **labels: str) -> DeployEvent:
    return DeployEvent("generic", event_id, "checkout", version, "prod", baseline, labels=labels)


async def test_the_deploy_that_undoes_a_rollback_is_watched_but_never_rolled_back() -> None:
    """v2 rolled back to v1; the CD tool then reports v1 deployed. That deploy is labelled as the
    rollback of v2's deployment, and a failing verdict on it only notifies."""
    supervisor, store, rollback, notifier = await make()
    bad, _ = await supervisor.submit(event("e1", "v2", "v1"))
    await supervisor.actions.conclude(bad, CONFIG.policies[0], Decision(Verdict.FAIL, "errors up", ()))
    assert len(rollback.requests) == 1
    undo, created = await supervisor.submit(event("e2", "v1"))
    assert created and undo.event.labels[ROLLBACK_OF_LABEL] == bad.id
    done = await supervisor.actions.conclude(
        undo, CONFIG.policies[0], Decision(Verdict.FAIL, "still bad", ())
    )
    assert len(rollback.requests) == 1
    assert done.state is State.ABORTED and "rollback of a rollback is never automatic" in done.reason
    assert notifier.sent[-1].kind is NotificationKind.WOULD_ROLL_BACK
    await store.aclose()


async def test_an_ordinary_next_deploy_is_not_mistaken_for_a_rollback() -> None:
    supervisor, store, _, _ = await make()
    bad, _ = await supervisor.submit(event("e1", "v2", "v1"))
    await supervisor.actions.conclude(bad, CONFIG.policies[0], Decision(Verdict.FAIL, "errors up", ()))
    fixed, _ = await supervisor.submit(event("e2", "v3", "v1"))
    assert ROLLBACK_OF_LABEL not in fixed.event.labels
    await store.aclose()


async def test_a_label_cannot_impersonate_the_service_when_choosing_a_policy() -> None:
    """Event fields outrank labels of the same name in `match`."""
    supervisor, store, _, _ = await make()
    staging = DeployEvent("generic", "e9", "checkout", "v2", "staging", "v1", labels={"environment": "prod"})
    deployment, _ = await supervisor.submit(staging)
    assert deployment.policy is None and deployment.state is State.ABORTED
    await store.aclose()
