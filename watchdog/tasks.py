"""Background tasks that are named, referenced and logged when they fail (STYLE "Take from them" 2).

A bare ``asyncio.create_task`` whose result nobody awaits swallows its exception until garbage
collection; a Watch that dies that way would leave a deployment unwatched in silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("watchdog.tasks")


class TaskGroup:
    """The tasks one owner started: each named, each logged if it fails, all cancellable together."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task.failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every task; True when all finished."""
        if not self.tasks:
            return True
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        return not pending

    async def cancel_all(self, grace: float = 2.0) -> None:
        """Cancel what is left and give it ``grace`` seconds to unwind."""
        pending = set(self.tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace)
