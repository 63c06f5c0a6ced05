"""What the vendor-API metrics adapters (Datadog, CloudWatch, New Relic) share beyond the HTTP retry
loop of :mod:`providers.metrics._http`: the poll window, the errors that mean "fix the config", and
the error metric's labels for them.

Private to ``providers.metrics``. Every adapter here turns a rendered query into the numbers of one
poll interval, the one that ends at ``at`` (:func:`window`), and fails in one of three ways:

- ``ProviderUnavailable`` (through :func:`providers.metrics._http.with_retries`): the vendor did not
  answer usefully after bounded retries, or answered something unreadable. The check is blind.
- ``ProviderQueryError``: the vendor refused the query itself; asking again gets the same answer.
- :class:`ProviderConfigError`: the vendor refused *us* (a key it does not accept, a key without the
  permission, an address that is not its API). Nothing but a config change helps, so it is not
  retried; the message names the provider and what to check. The check is blind too, never failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeVar

from providers.metrics._http import RETRY_AFTER_CAP, Failed, Retry
from watchdog.errors import PermanentError

T = TypeVar("T")


class ProviderConfigError(PermanentError):
    """The provider's credentials or address are wrong: a person must change the config.

    A ``PermanentError``: never retried, and the Watch reports the check blind with this message.
    ``kind`` labels the error counter (``forbidden``, ``config``).
    """

    def __init__(self, message: str, *, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Window:
    """The span one poll measures, in unix seconds: ``[start, end)``, ``end`` being the poll time."""

    start: float
    end: float

    @property
    def start_ms(self) -> int:
        return round(self.start * 1000)

    @property
    def end_ms(self) -> int:
        return round(self.end * 1000)

    def holds_ms(self, timestamp_ms: float) -> bool:
        """Whether a point stamped ``timestamp_ms`` (its bucket's start) belongs to this poll.

        Half-open, so that consecutive polls on the Watch's grid count every bucket exactly once.
        """
        return self.start_ms <= timestamp_ms < self.end_ms


def window(at: float, interval: float) -> Window:
    """The interval that ends at ``at``: what a poll at ``at`` measures."""
    if interval <= 0:
        raise ValueError("interval must be a positive number of seconds")
    return Window(start=at - interval, end=at)


def rate_limited(what: str, message: str, delay: float | None) -> Retry | Failed:
    """The error for a rate-limited attempt whose limit lifts in ``delay`` seconds.

    Within what a poll can afford (``RETRY_AFTER_CAP``) it is a ``Retry`` after that wait. A longer
    wait is not retried early, which would only be refused again: the poll gives up at once,
    unavailable (``what`` names the provider), and the next poll tries anew.
    """
    if delay is not None and delay > RETRY_AFTER_CAP:
        return Failed(
            f"{what}: {message}; the limit resets in {delay:g} s, longer than a poll waits",
            kind="rate_limited",
        )
    return Retry(message, kind="rate_limited", delay=delay)


_SPACE: Final = re.compile(r"\s+")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line and at most ``limit`` characters, for an error message."""
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
