"""What the HTTP metrics adapters share: settings, the retry policy, error mapping and escaping.

Private to ``providers.metrics``: the Prometheus and scrape adapters both talk plain HTTP to
something that may be briefly down, and must fail the same way (``ProviderUnavailable`` after a
bounded number of attempts, never an aiohttp exception across the port).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from providers import _http
from watchdog.config.models import Duration, format_duration
from watchdog.errors import ProviderQueryError, ProviderUnavailable, TemporaryError
from watchdog.plugins import AdapterContext

log = structlog.get_logger()

T = TypeVar("T")

RETRY_AFTER_CAP: Final = 5.0
"""Longest ``Retry-After`` we honour, in seconds. A poll has a budget of its own (the policy's
``poll_timeout``, 20 s by default); a server asking for a minute is better reported as unavailable
than waited for."""

_JITTER: Final = wait_random_exponential(multiplier=0.2, max=2)
"""Random exponential backoff: 0-0.2 s, 0-0.4 s, ... up to 2 s. Small on purpose: a poll must fit
in its interval, and the random spread keeps many watches from retrying in lock step."""


def _user_agent() -> str:
    try:
        return f"rollback-watchdog/{version('rollback-watchdog')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "rollback-watchdog"


USER_AGENT: Final = _user_agent()


def check_http_url(value: str) -> str:
    """Refuse anything but an absolute http(s) URL now, at config load, rather than at first poll."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


class HttpSettings(BaseModel):
    """Keys every HTTP metrics adapter takes."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    timeout: Duration = 10.0
    """Per request (one attempt), connect to last byte. 10s by default: a healthy Prometheus answers
    a typical check query in well under a second, and three attempts still fit a poll."""
    retries: int = Field(default=3, ge=1, le=10)
    """Attempts in total (1 = no retry) before the provider is reported unavailable for the poll.
    3 by default: rides over a restart or a dropped connection without stretching a poll."""


def escape(value: str) -> str:
    """Escape for a PromQL double-quoted string, so a template value cannot close the string.

    A version like ``v2"} or vector(1) #`` would otherwise end the label matcher and inject its
    own expression; escaped it is just an odd label value that matches nothing.
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Retry(TemporaryError):
    """One attempt failed in a way that another attempt may fix. Never leaves the adapter."""

    def __init__(self, message: str, *, kind: str, delay: float | None = None) -> None:
        super().__init__(message, delay=delay)
        self.kind = kind


class Failed(ProviderUnavailable):
    """The provider is unavailable for a reason retrying will not fix (401, a non-Prometheus body).

    Carries ``kind`` for the error metric; it is a ``ProviderUnavailable`` for the core.
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    seconds = _http.retry_after_seconds(headers.get("Retry-After"), time.time())
    return None if seconds is None else min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _wait(state: RetryCallState) -> float:
    """Jittered backoff, but never shorter than what the server asked for."""
    base = _JITTER(state)
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, TemporaryError) and exc.delay is not None:
        return max(base, min(exc.delay, RETRY_AFTER_CAP))
    return base


def retry_status(status: int, headers: Mapping[str, str], detail: str) -> Retry:
    """The ``Retry`` for a 5xx or 429 answer."""
    if status == 429:
        return Retry(f"rate limited (HTTP 429){detail}", kind="rate_limited", delay=retry_after(headers))
    return Retry(f"HTTP {status}{detail}", kind="http", delay=retry_after(headers))


async def get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: Mapping[str, str] | None,
    timeout: float,
    read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
) -> T:
    """One GET, with aiohttp's timeouts and connection errors mapped to ``Retry``.

    ``read`` turns the response into a result or raises ``Retry`` / a final error; it runs inside
    the timeout, so a server that sends headers and then stalls is a timeout too.
    """
    try:
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return await read(response)
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError too
        raise Retry(f"timed out after {format_duration(timeout)}", kind="timeout") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise Retry(f"connection failed: {exc or type(exc).__name__}", kind="connection") from exc
    except aiohttp.ClientResponseError as exc:
        raise Retry(f"bad HTTP response: {exc.message}", kind="http") from exc


async def with_retries(
    attempts: int,
    what: str,
    call: Callable[[], Awaitable[T]],
) -> T:
    """Run ``call`` up to ``attempts`` times while it raises ``Retry``; then ``ProviderUnavailable``.

    ``what`` names the provider (and target) in the final message, which is what an operator sees
    in the API and in Slack when a check goes blind.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info(
            "metrics.retry",
            provider=what,
            attempt=state.attempt_number,
            problem=str(exc),
            wait=round(state.upcoming_sleep, 3),
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_wait,
        retry=retry_if_exception_type(Retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(call)
    except Retry as exc:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise Failed(f"{what}: {exc} (gave up after {tries})", kind=exc.kind) from exc


def error_kind(exc: Exception) -> str:
    """A small fixed set of labels for the error counter (no message text: bounded cardinality)."""
    kind = getattr(exc, "kind", None)  # Failed, and the API providers' own errors, carry one
    if isinstance(kind, str):
        return kind
    if isinstance(exc, ProviderQueryError):
        return "query"
    return "other"


class Instruments:
    """Records poll latency and errors when the adapter was given the daemon's metrics."""

    def __init__(self, name: str, context: AdapterContext | None) -> None:
        self._name = name
        self._metrics = context.metrics if context is not None else None

    async def timed(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call``, observing its duration (retries included) and counting its failure."""
        started = time.monotonic()
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._metrics is not None:
                self._metrics.provider_errors.labels(provider=self._name, kind=error_kind(exc)).inc()
            raise
        finally:
            if self._metrics is not None:
                self._metrics.poll_latency.labels(provider=self._name).observe(time.monotonic() - started)
