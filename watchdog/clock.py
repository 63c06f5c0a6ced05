"""Time, injected: the same Watch runs live, in tests and in ``replay`` (virtual time).

A clock gives ``now()`` in unix seconds and an interruptible ``sleep_until``: a stop request wakes a
sleeping Watch at once instead of after its interval, so SIGTERM is honoured within seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep_until(self, deadline: float, stop: asyncio.Event | None = None) -> bool:
        """Sleep until ``deadline``; return False at once if ``stop`` gets set first."""
        ...


class SystemClock:
    """Wall-clock time for the daemon."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float, stop: asyncio.Event | None = None) -> bool:
        delay = max(0.0, deadline - time.time())
        if stop is None:
            await asyncio.sleep(delay)
            return True
        if stop.is_set():
            return False
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            return True
        return False


class VirtualClock:
    """Time that moves only when something sleeps: replay runs hours of bake in milliseconds.

    Suitable for one Watch at a time (replay runs recordings one after another); concurrent
    sleepers would each jump the clock to their own deadline.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float, stop: asyncio.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        self._now = max(self._now, deadline)
        return True
