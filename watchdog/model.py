"""The records the watchdog passes between its parts and keeps in its store.

They are plain frozen dataclasses rather than pydantic models: they are built from data that was
already validated (a parsed webhook, a store row), and they are created on every poll, so they should
cost nothing to make.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class State(enum.StrEnum):
    """Lifecycle of a deployment (DESIGN §1)."""

    BAKING = "baking"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    PASSED = "passed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    INCONCLUSIVE = "inconclusive"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"

    @property
    def active(self) -> bool:
        """Whether a Watch (or an unfinished rollback) still owns this deployment."""
        return self in (State.BAKING, State.PAUSED, State.ROLLING_BACK)


class Verdict(enum.StrEnum):
    """What the analysis says about a check or a whole deployment."""

    PENDING = "pending"
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """A CD tool's webhook, normalised (DESIGN §1).

    ``event_id`` is the source's own id for the event, the idempotency key: the same
    ``(source, event_id)`` never creates two deployments.
    """

    source: str
    event_id: str
    service: str
    version: str
    environment: str = ""
    baseline_version: str | None = None
    strategy: str | None = None
    target: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of a deployment's audit trail: who did what, when and why."""

    at: float
    actor: str
    action: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "actor": self.actor, "action": self.action, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The latest result of one check, as stored, served by the API and shown in notifications.

    ``summary`` is one sentence for a person on call; ``statistics`` holds the numbers behind it
    (counts, effect estimate, e-value, threshold, rendered queries).
    """

    name: str
    verdict: Verdict
    summary: str
    statistics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "statistics": self.statistics,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckReport:
        return cls(
            name=str(data["name"]),
            verdict=Verdict(data["verdict"]),
            summary=str(data.get("summary", "")),
            statistics=dict(data.get("statistics") or {}),
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment as the store keeps it.

    ``started_at`` is when the bake window began (the event's arrival); ``polls`` counts completed
    polls, so a resumed Watch continues on the same time grid. ``analysis`` is the engine's serialised
    state (e-process values), written after every poll so a crash mid-bake loses no evidence.
    """

    id: str
    event: DeployEvent
    policy: str | None
    state: State
    verdict: Verdict
    created_at: float
    updated_at: float
    decided_at: float | None = None
    reason: str = ""
    polls: int = 0
    checks: tuple[CheckReport, ...] = ()
    analysis: dict[str, Any] = field(default_factory=dict)
    rollback: dict[str, Any] = field(default_factory=dict)
    audit: tuple[AuditEntry, ...] = ()

    @property
    def service(self) -> str:
        return self.event.service

    @property
    def environment(self) -> str:
        return self.event.environment

    @property
    def version(self) -> str:
        return self.event.version

    def to_json(self) -> dict[str, Any]:
        """The API's representation (DESIGN §4)."""
        e = self.event
        return {
            "id": self.id,
            "service": e.service,
            "environment": e.environment,
            "version": e.version,
            "baseline_version": e.baseline_version,
            "strategy": e.strategy,
            "target": e.target,
            "labels": e.labels,
            "source": e.source,
            "event_id": e.event_id,
            "policy": self.policy,
            "state": self.state.value,
            "verdict": self.verdict.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "decided_at": self.decided_at,
            "reason": self.reason,
            "polls": self.polls,
            "checks": [c.to_json() for c in self.checks],
            "rollback": self.rollback,
            "audit": [a.to_json() for a in self.audit],
        }
