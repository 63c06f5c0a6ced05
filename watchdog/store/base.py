"""The Store port: where deployments live, durably.

State changes go through :meth:`Store.transition`, a compare-and-set on the state: of two racing
writers (a Watch deciding to roll back and an operator aborting, or two replicas) exactly one wins.
That, plus writing a rollback's intent before calling the adapter, is what makes "roll back exactly
once" hold across crashes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from watchdog.model import AuditEntry, CheckReport, DeployEvent, Deployment, State, Verdict


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Deployment]
    next: str | None


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date (migrations)."""
        ...

    async def aclose(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached (``/readyz``)."""
        ...

    async def create(
        self, event: DeployEvent, policy: str | None, state: State, now: float, reason: str = ""
    ) -> tuple[Deployment, bool]:
        """Record a deployment for ``event``, idempotent by ``(event.source, event.event_id)``.

        Returns the deployment and whether it was created (False: a duplicate, the existing one).
        """
        ...

    async def get(self, deployment_id: str) -> Deployment | None: ...

    async def page(
        self,
        *,
        state: str | None = None,
        service: str | None = None,
        environment: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first; ``cursor`` is the previous page's ``next``."""
        ...

    async def active(self) -> list[Deployment]:
        """Deployments a Watch (or an unfinished rollback) should own: baking, paused, rolling back."""
        ...

    async def transition(
        self,
        deployment_id: str,
        allowed_from: Collection[State],
        to: State,
        now: float,
        *,
        verdict: Verdict | None = None,
        reason: str | None = None,
        decided: bool = False,
        rollback: dict[str, Any] | None = None,
        audit: AuditEntry | None = None,
    ) -> Deployment:
        """Move to ``to`` only from one of ``allowed_from``, atomically with its audit entry.

        Raises ``StateConflict`` when the deployment is in another state, ``KeyError`` when unknown.
        """
        ...

    async def record_poll(
        self,
        deployment_id: str,
        polls: int,
        checks: tuple[CheckReport, ...],
        analysis: dict[str, Any],
        now: float,
    ) -> None:
        """Save a poll's results and the engine's state, so a restart resumes with its evidence."""
        ...

    async def add_audit(self, deployment_id: str, entry: AuditEntry) -> None: ...

    async def last_passed_version(self, service: str, environment: str) -> str | None:
        """The newest version of this service and environment whose watch passed."""
        ...

    async def count_by_state(self) -> dict[str, int]: ...
