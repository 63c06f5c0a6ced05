"""Injected time (watchdog.clock) and owned background tasks (watchdog.tasks): a stop request wakes a
sleeper at once; virtual time only moves forward; every task is named, tracked, and logged if it
fails."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from watchdog.clock import SystemClock, VirtualClock
from watchdog.tasks import TaskGroup

# --- VirtualClock -----------------------------------------------------------------------------


async def test_virtual_clock_jumps_to_the_deadline() -> None:
    """Sleeping moves virtual time to the deadline at once: hours of bake in no time."""
    clock = VirtualClock(start=100.0)
    assert clock.now() == 100.0
    started = time.monotonic()
    assert await clock.sleep_until(3700.0) is True
    assert clock.now() == 3700.0
    assert time.monotonic() - started < 0.1


async def test_virtual_clock_never_goes_back() -> None:
    """A deadline in the past leaves the clock where it is."""
    clock = VirtualClock(start=50.0)
    assert await clock.sleep_until(10.0) is True
    assert clock.now() == 50.0


async def test_virtual_clock_stop_set_returns_false_without_moving() -> None:
    """A stop request that is already set ends the sleep at once, time unchanged."""
    clock = VirtualClock(start=0.0)
    stop = asyncio.Event()
    stop.set()
    assert await clock.sleep_until(60.0, stop) is False
    assert clock.now() == 0.0


# --- SystemClock ------------------------------------------------------------------------------


def test_system_clock_is_unix_time() -> None:
    """now() is wall-clock unix seconds."""
    assert abs(SystemClock().now() - time.time()) < 1.0


async def test_system_clock_sleep_is_interrupted_by_stop() -> None:
    """A sleeping Watch wakes as soon as stop is set (SIGTERM honoured in seconds, not an interval)."""
    clock = SystemClock()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, stop.set)
    started = time.monotonic()
    assert await clock.sleep_until(clock.now() + 30.0, stop) is False
    assert time.monotonic() - started < 1.0


async def test_system_clock_sleep_reaches_the_deadline() -> None:
    """Without a stop, the sleep ends at the deadline and says so."""
    clock = SystemClock()
    stop = asyncio.Event()
    started = time.monotonic()
    assert await clock.sleep_until(clock.now() + 0.03, stop) is True
    assert time.monotonic() - started >= 0.02
    assert await clock.sleep_until(clock.now() + 0.01) is True


async def test_system_clock_past_deadline_returns_at_once() -> None:
    """A deadline already passed returns True at once; a stop already set returns False at once."""
    clock = SystemClock()
    assert await clock.sleep_until(clock.now() - 10.0, asyncio.Event()) is True
    stop = asyncio.Event()
    stop.set()
    assert await clock.sleep_until(clock.now() + 30.0, stop) is False


# --- TaskGroup --------------------------------------------------------------------------------


async def test_spawned_task_is_named_tracked_and_forgotten_when_done() -> None:
    """A task gets `<group>:<name>`, is held while it runs, and dropped once finished."""
    group = TaskGroup("supervisor")
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 7

    task = group.spawn(work(), "watch-abc")
    assert task.get_name() == "supervisor:watch-abc"
    assert group.tasks == {task}
    gate.set()
    assert await task == 7
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert group.tasks == set()


async def test_failed_task_is_logged_with_its_name() -> None:
    """A task that dies logs `task.failed` with its name and error: no silent death of a Watch."""
    group = TaskGroup("supervisor")

    async def boom() -> None:
        raise RuntimeError("provider exploded")

    with capture_logs() as logs:
        task = group.spawn(boom(), "watch-1")
        with pytest.raises(RuntimeError):
            await task
        await asyncio.sleep(0)
    failures = [entry for entry in logs if entry["event"] == "task.failed"]
    assert len(failures) == 1
    assert failures[0]["task"] == "supervisor:watch-1"
    assert "provider exploded" in failures[0]["error"]
    assert failures[0]["log_level"] == "error"


async def test_cancelled_and_successful_tasks_are_not_logged_as_failures() -> None:
    """Cancellation (shutdown) and success are normal ends."""
    group = TaskGroup("g")

    async def forever() -> None:
        await asyncio.Event().wait()

    async def fine() -> None:
        return None

    with capture_logs() as logs:
        ok = group.spawn(fine(), "fine")
        long = group.spawn(forever(), "forever")
        await ok
        await group.cancel_all(grace=1.0)
        await asyncio.sleep(0)
    assert long.cancelled()
    assert not [entry for entry in logs if entry["event"] == "task.failed"]


async def test_wait_reports_whether_everything_finished() -> None:
    """wait(timeout) is True when every task ended in time, False when some are still running."""
    group = TaskGroup("g")
    assert await group.wait(0.01) is True  # nothing to wait for
    gate = asyncio.Event()
    task = group.spawn(gate.wait(), "gate")
    assert await group.wait(0.02) is False
    gate.set()
    assert await group.wait(1.0) is True
    assert task.done()


async def test_cancel_all_stops_every_remaining_task() -> None:
    """cancel_all cancels what is left and waits for it to unwind (a `finally` runs)."""
    group = TaskGroup("g")
    unwound: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            unwound.append(name)

    tasks = [group.spawn(worker(str(i)), str(i)) for i in range(3)]
    await asyncio.sleep(0)
    await group.cancel_all(grace=1.0)
    assert all(t.cancelled() for t in tasks)
    assert sorted(unwound) == ["0", "1", "2"]
