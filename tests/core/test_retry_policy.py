"""Retries (watchdog.retry.RetryPolicy): TemporaryError is retried up to `attempts` tries in all,
then re-raised as itself; PermanentError and anything else go through at once; a TemporaryError's
`delay` (Retry-After) replaces the backoff, capped by `max_wait`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from watchdog.errors import PermanentError, ProviderUnavailable, TemporaryError
from watchdog.retry import RetryPolicy

FAST = RetryPolicy(attempts=4, base=0.001, max_wait=0.002)


def failing(
    errors: list[BaseException], result: str = "ok"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A call that raises the given errors in turn, then returns ``result``; counts its calls."""
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return call, calls


async def test_success_is_not_retried() -> None:
    """A call that works is made once."""
    fn, calls = failing([])
    assert await FAST.call(fn) == "ok"
    assert len(calls) == 1


async def test_temporary_errors_are_retried_until_success() -> None:
    """Temporary failures followed by success give the result."""
    fn, calls = failing([TemporaryError("503"), ProviderUnavailable("down")])
    assert await FAST.call(fn) == "ok"
    assert len(calls) == 3


async def test_gives_up_after_attempts_and_reraises_the_last_error() -> None:
    """`attempts` counts the first try; after the last one the last TemporaryError itself is raised
    (not tenacity's RetryError), so callers see our error tree."""
    last = TemporaryError("third")
    fn, calls = failing([TemporaryError("first"), TemporaryError("second"), last], result="never")
    with pytest.raises(TemporaryError) as caught:
        await RetryPolicy(attempts=3, base=0.001, max_wait=0.002).call(fn)
    assert caught.value is last
    assert len(calls) == 3


async def test_one_attempt_means_no_retry() -> None:
    """attempts=1 tries once."""
    fn, calls = failing([TemporaryError("x")])
    with pytest.raises(TemporaryError):
        await RetryPolicy(attempts=1).call(fn)
    assert len(calls) == 1


@pytest.mark.parametrize("error", [PermanentError("403"), ValueError("bug"), KeyError("k")])
async def test_permanent_and_other_errors_are_not_retried(error: BaseException) -> None:
    """Retrying a 403 (or a bug) only delays the page to a human: raised at the first try."""
    fn, calls = failing([error])
    with pytest.raises(type(error)) as caught:
        await FAST.call(fn)
    assert caught.value is error
    assert len(calls) == 1


async def test_permanent_error_after_temporary_ones_stops_retrying() -> None:
    """A PermanentError ends the retries even when attempts remain."""
    fn, calls = failing([TemporaryError("503"), PermanentError("404"), TemporaryError("never reached")])
    with pytest.raises(PermanentError):
        await FAST.call(fn)
    assert len(calls) == 2


async def test_temporary_error_delay_is_honoured() -> None:
    """A TemporaryError with `delay` (the other side's Retry-After) waits that long before the next
    try, instead of the (here much shorter) backoff."""
    fn, calls = failing([TemporaryError("429", delay=0.05), TemporaryError("429", delay=0.05)])
    policy = RetryPolicy(attempts=3, base=0.0001, max_wait=1.0)
    started = time.monotonic()
    assert await policy.call(fn) == "ok"
    assert time.monotonic() - started >= 0.095
    assert len(calls) == 3


async def test_delay_is_capped_by_max_wait() -> None:
    """A server asking for an hour does not stall the watch: the wait is capped at `max_wait`."""
    fn, _ = failing([TemporaryError("429", delay=3600.0)])
    started = time.monotonic()
    assert await RetryPolicy(attempts=2, base=0.001, max_wait=0.01).call(fn) == "ok"
    assert time.monotonic() - started < 1.0


async def test_zero_or_negative_delay_retries_at_once() -> None:
    """A delay of 0 (or a negative one from a skewed Retry-After date) retries immediately."""
    fn, calls = failing([TemporaryError("a", delay=0.0), TemporaryError("b", delay=-5.0)])
    started = time.monotonic()
    assert await RetryPolicy(attempts=3, base=0.5, max_wait=10.0).call(fn) == "ok"
    assert time.monotonic() - started < 0.2
    assert len(calls) == 3


def test_defaults() -> None:
    """Four tries in all, 0.5 s backoff scale, 10 s cap: documented defaults."""
    policy = RetryPolicy()
    assert (policy.attempts, policy.base, policy.max_wait) == (4, 0.5, 10.0)
