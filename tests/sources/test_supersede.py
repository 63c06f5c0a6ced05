"""A newer deploy of the same service and environment supersedes a baking one: the older is closed
as superseded, its Watch stops, and it is never rolled back on its own (issue 4, item 3).

The real Supervisor, Actions, Watch and SQLite store, with in-memory fakes at the ports: the old
version's metrics are bad enough that, left alone, it is rolled back within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from watchdog.actions import Actions
from watchdog.clock import SystemClock
from watchdog.config.models import WatchdogConfig
from watchdog.metrics import WatchdogMetrics
from watchdog.model import DeployEvent, State
from watchdog.ports import Sample
from watchdog.store import open_store
from watchdog.store.base import Store
from watchdog.supervisor import Supervisor
from watchdog.testing import FakeMetricsProvider, FakeNotifier, FakeRollback

CONFIG = {
    "providers": {"fake": {"type": "fake"}},
    "rollback": {"fake": {"type": "fake"}},
    "policies": [
        {
            "name": "all",
            "bake": "30s",
            "interval": "50ms",
            "rollback": "fake",
            "checks": [
                {
                    "name": "errors",
                    "type": "ratio",
                    "provider": "fake",
                    "bad": 'bad{version="{version}"}',
                    "total": 'total{version="{version}"}',
                    "compare": "slo",
                    "objective": 0.01,
                    "critical": True,
                }
            ],
        }
    ],
}


def answer(query: str, at: float) -> list[Sample]:
    """v1 fails 1.5 % of its requests against an objective of 1 %: watched alone it is rolled back
    after about seven polls (a third of a second), which leaves time to supersede it first. Every
    other version is clean."""
    bad = query.startswith("bad") and 'version="v1"' in query
    return [Sample({}, 15.0 if bad else (0.0 if query.startswith("bad") else 1000.0))]


@dataclass
class Harness:
    supervisor: Supervisor
    store: Store
    rollback: FakeRollback

    async def submit(self, event_id: str, version: str, **fields: str) -> str:
        event = DeployEvent(
            source="github",
            event_id=event_id,
            service=fields.get("service", "checkout"),
            environment=fields.get("environment", "prod"),
            version=version,
        )
        deployment, created = await self.supervisor.submit(event)
        assert created
        return deployment.id

    async def state(self, deployment_id: str) -> State:
        deployment = await self.store.get(deployment_id)
        assert deployment is not None
        return deployment.state

    async def wait_for(self, deployment_id: str, state: State, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.state(deployment_id) is not state:
            assert time.monotonic() < deadline, f"{deployment_id} never became {state}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    clock = SystemClock()
    metrics = WatchdogMetrics()
    rollback = FakeRollback()
    actions = Actions(
        store=store,
        rollbacks={"fake": rollback},
        notifiers={"n": FakeNotifier()},
        clock=clock,
        metrics=metrics,
    )
    supervisor = Supervisor(
        config=WatchdogConfig.model_validate(CONFIG),
        store=store,
        providers={"fake": FakeMetricsProvider(answer)},
        actions=actions,
        clock=clock,
        metrics=metrics,
    )
    await supervisor.start()
    yield Harness(supervisor, store, rollback)
    await supervisor.shutdown(2.0)
    await store.aclose()


async def test_left_alone_the_bad_old_version_is_rolled_back(harness: Harness) -> None:
    """The control for the tests below: v1 on its own is rolled back within a second."""
    old = await harness.submit("d1", "v1")
    await harness.wait_for(old, State.ROLLED_BACK, timeout=3.0)
    assert [r.deployment.id for r in harness.rollback.requests] == [old]


async def test_a_newer_deploy_supersedes_the_baking_one_which_is_never_rolled_back(harness: Harness) -> None:
    """v2 of the same service and environment closes v1 as superseded, with an audit entry naming
    v2's deployment; v1's Watch stops, so its bad numbers never roll it back."""
    old = await harness.submit("d1", "v1")
    await asyncio.sleep(0.08)  # v1 is polled at least once
    new = await harness.submit("d2", "v2")
    assert await harness.state(old) is State.SUPERSEDED
    await asyncio.sleep(1.0)
    superseded = await harness.store.get(old)
    assert superseded is not None and superseded.state is State.SUPERSEDED
    assert superseded.decided_at is not None
    assert superseded.audit[-1].action == "superseded" and new in superseded.audit[-1].detail
    assert harness.rollback.requests == []
    assert old not in harness.supervisor.watches
    assert await harness.state(new) is State.BAKING


async def test_other_services_and_environments_are_left_alone(harness: Harness) -> None:
    """Only the same service and environment is superseded."""
    first = await harness.submit("d1", "v2")
    other_env = await harness.submit("d2", "v3", environment="staging")
    other_service = await harness.submit("d3", "v3", service="cart")
    assert {await harness.state(d) for d in (first, other_env, other_service)} == {State.BAKING}


async def test_a_paused_deployment_is_superseded_and_a_rolling_back_one_is_not(harness: Harness) -> None:
    """Paused deployments are superseded like baking ones; a rollback in progress is never
    interrupted: that deployment keeps rolling_back."""
    paused, _ = await harness.store.create(
        DeployEvent("github", "p", "checkout", "v0", "prod"), "all", State.PAUSED, time.time()
    )
    rolling, _ = await harness.store.create(
        DeployEvent("github", "r", "checkout", "v0", "prod"), "all", State.ROLLING_BACK, time.time()
    )
    await harness.submit("d1", "v2")
    assert await harness.state(paused.id) is State.SUPERSEDED
    assert await harness.state(rolling.id) is State.ROLLING_BACK


async def test_two_deploys_arriving_together_leave_exactly_one_baking(harness: Harness) -> None:
    """Concurrent deploys of one service cannot supersede each other: the later one bakes."""
    first, second = await asyncio.gather(harness.submit("d1", "v2"), harness.submit("d2", "v3"))
    states = [await harness.state(first), await harness.state(second)]
    assert sorted(states) == sorted([State.BAKING, State.SUPERSEDED])
