"""Bounded, jittered retries of ``TemporaryError`` (tenacity), honouring the other side's
``Retry-After``. ``PermanentError`` and everything else go through at once: retrying a 403 only
delays the page to a human."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from watchdog.errors import TemporaryError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    """Tries in all, the first included."""
    base: float = 0.5
    """Scale of the exponential backoff, in seconds."""
    max_wait: float = 10.0
    """Cap on one wait, in seconds, also on a server's Retry-After."""

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TemporaryError) and exc.delay is not None:
            return max(0.0, min(exc.delay, self.max_wait))
        return float(wait_random_exponential(multiplier=self.base, max=self.max_wait)(state))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TemporaryError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
