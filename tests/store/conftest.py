"""Fixtures for the SQLite store: an opened store (on a file and in memory), the path of a file
store that tests can close and reopen, and deploy events to record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from watchdog.model import DeployEvent
from watchdog.store.sqlite import SqliteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a file-backed store lives; a subdirectory, so that open() must create it."""
    return tmp_path / "state" / "watchdog.db"


@pytest.fixture(params=["file", "memory"])
async def store(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[SqliteStore]:
    """An opened store, once on a file and once in memory; closed afterwards."""
    url = f"sqlite://{db_path}" if request.param == "file" else "sqlite:///:memory:"
    s = SqliteStore(url)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def event() -> Callable[..., DeployEvent]:
    """A generic deploy event; keywords override fields."""

    def make(event_id: str = "evt-1", **fields: Any) -> DeployEvent:
        values: dict[str, Any] = {
            "source": "generic",
            "event_id": event_id,
            "service": "checkout",
            "environment": "prod",
            "version": "v2",
            "baseline_version": "v1",
            "strategy": "canary",
            "target": {"namespace": "shop", "deployment": "checkout"},
            "labels": {"team": "payments"},
        }
        values.update(fields)
        return DeployEvent(**values)

    return make
