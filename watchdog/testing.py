"""In-memory fakes of the ports, for tests of the core and of users' own policies.

They behave like adapters at the boundary (same errors, same call shapes) and record what they
were asked, so a test can assert "rolled back exactly once" without a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.ports import Notification, RollbackRequest, RollbackResult, Sample

Answer = list[Sample] | Exception | None
Script = Callable[[str, float], Answer]


@dataclass
class FakeMetricsProvider:
    """Answers each query with ``script(query, at)``: samples, None (no data) or an exception to
    raise (``ProviderUnavailable`` for an outage)."""

    script: Script
    queries: list[tuple[str, float]] = field(default_factory=list)

    async def query(self, query: str, *, at: float, interval: float) -> list[Sample]:
        self.queries.append((query, at))
        answer = self.script(query, at)
        if isinstance(answer, Exception):
            raise answer
        return answer or []

    def escape(self, value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    async def aclose(self) -> None:
        return None


@dataclass
class FakeRollback:
    """Records each request; raises the next of ``failures`` first, if any."""

    failures: list[Exception] = field(default_factory=list)
    requests: list[RollbackRequest] = field(default_factory=list)

    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        self.requests.append(request)
        if self.failures:
            raise self.failures.pop(0)
        return RollbackResult(detail="rolled back (fake)")

    async def aclose(self) -> None:
        return None


@dataclass
class FakeNotifier:
    sent: list[Notification] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    async def send(self, notification: Notification) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(notification)

    async def aclose(self) -> None:
        return None
