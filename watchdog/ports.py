"""The ports: what the core needs from the outside world, as ``typing.Protocol``s.

Adapters in ``providers/`` implement them and register through the entry-point group
``rollback_watchdog.providers`` (see :mod:`watchdog.plugins`). Each port is one or two async methods
plus ``aclose()``; each has an in-memory fake in :mod:`watchdog.testing` for tests.

Errors cross a port only as :mod:`watchdog.errors` classes: ``TemporaryError`` (retry may help),
``PermanentError`` (it will not), ``EventRejected`` for sources.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from watchdog.model import CheckReport, DeployEvent, Deployment


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' value for one poll: the labels that tell series apart, and a number.

    For counters it is the increment over the poll's interval (the query asks for it, e.g. PromQL
    ``increase(...[1m])``); for gauges it is the current value.
    """

    labels: Mapping[str, str]
    value: float


@runtime_checkable
class MetricsProvider(Protocol):
    """Answers a check's rendered query for one poll.

    An empty list means "no data" (the check is blind this poll, it is not failing). Failures raise
    ``ProviderUnavailable`` after the provider's own bounded retries, or ``ProviderQueryError`` when
    the query itself is wrong.

    A provider may declare a class attribute ``immediate = True`` when it answers from memory and
    never waits (replay's recordings); it then also offers a synchronous ``query_now`` with the same
    arguments, which the Watch calls inline, without tasks or a timeout. Network providers leave it
    unset.
    """

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        """Evaluate ``query`` at unix time ``at``; ``interval`` is the poll interval in seconds."""
        ...

    def escape(self, value: str) -> str:
        """Escape a template value for this provider's query language (a quoted label value)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """What a rollback adapter is asked to do.

    ``idempotency_key`` is ``<deployment id>:rollback``; a retry after a crash sends the same key so
    the receiving side can de-duplicate.
    """

    deployment: Deployment
    idempotency_key: str
    reason: str
    actor: str = "watchdog"


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """A finished rollback: a sentence for people and whatever details the adapter wants stored."""

    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RollbackTarget(Protocol):
    """Puts the previous version back. Called at most once per deployment by the core."""

    async def rollback(self, request: RollbackRequest) -> RollbackResult: ...

    async def aclose(self) -> None: ...


class NotificationKind(enum.StrEnum):
    """Why a notification is sent."""

    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    WOULD_ROLL_BACK = "would_roll_back"  # dry run or freeze: decided, not executed
    PASSED = "passed"
    INCONCLUSIVE = "inconclusive"
    BLIND = "blind"


@dataclass(frozen=True, slots=True)
class Notification:
    """What happened to a deployment, in terms a notifier can render.

    ``headline`` is one sentence; ``action`` says what was done ("Rolled back through hook",
    "Dry run: would have rolled back"); ``checks`` carry the numbers behind the decision.
    """

    kind: NotificationKind
    deployment: Deployment
    headline: str
    action: str
    checks: tuple[CheckReport, ...] = ()


@runtime_checkable
class Notifier(Protocol):
    """Tells people what happened (Slack, a webhook, ...)."""

    async def send(self, notification: Notification) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """A webhook request as a source sees it: the raw body (signatures cover bytes) and headers.

    ``secrets`` are the accepted secrets for this source (several during a rotation); ``settings``
    is the source's own config section (field overrides as dotted paths).
    """

    headers: Mapping[str, str]
    body: bytes
    secrets: tuple[str, ...]
    allow_unsigned: bool
    now: float
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CanaryKey:
    """Which deployment a CD tool's gate asks about: its service, environment and version."""

    service: str
    environment: str
    version: str


@runtime_checkable
class GateSource(Protocol):
    """A source whose tool also asks go/no-go questions (Flagger's ``confirm-promotion`` and
    ``rollback`` webhooks): it authenticates the request as it does events and names the canary."""

    def identify(self, incoming: IncomingEvent) -> CanaryKey: ...


@runtime_checkable
class EventSource(Protocol):
    """Turns one CD tool's webhook into a DeployEvent.

    Returns ``None`` for a valid event that starts nothing (a ping, a failed status): HTTP 204.
    Raises ``EventRejected`` for anything unauthenticated or malformed.
    """

    def parse(self, incoming: IncomingEvent) -> DeployEvent | None: ...
