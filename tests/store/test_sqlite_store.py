"""The SQLite store (watchdog.store.sqlite): migrations, idempotent creation by event key, state
changes as compare-and-set with their audit entry, polls that survive a restart, and the queries the
API and the supervisor rely on."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from watchdog.errors import StateConflict, StoreError
from watchdog.model import AuditEntry, CheckReport, DeployEvent, State, Verdict
from watchdog.store import open_store
from watchdog.store.sqlite import MIGRATIONS, SqliteStore, sqlite_path

Event = Callable[..., DeployEvent]


def schema_versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]


async def reopened(path: Path) -> SqliteStore:
    s = SqliteStore(f"sqlite://{path}")
    await s.open()
    return s


# --- opening and migrations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/rw/state.db", "/var/lib/rw/state.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
    ],
)
def test_sqlite_url_to_path(url: str, path: str) -> None:
    """`sqlite:///ABSOLUTE/PATH` is a file; `sqlite:///:memory:` is an in-memory database."""
    assert sqlite_path(url) == path


def test_open_store_picks_sqlite_and_refuses_other_schemes() -> None:
    """Only sqlite:// has a backend in this release; postgresql:// says so instead of failing later."""
    assert isinstance(open_store("sqlite:///:memory:"), SqliteStore)
    with pytest.raises(StoreError, match="only sqlite://"):
        open_store("postgresql://user@host/db")


async def test_migrations_applied_once_and_idempotent_across_reopen(db_path: Path) -> None:
    """A new file gets every migration, recorded once; reopening applies nothing twice and keeps data.
    The parent directory is created."""
    s = await reopened(db_path)
    await s.aclose()
    assert schema_versions(db_path) == list(range(1, len(MIGRATIONS) + 1))
    for _ in range(2):
        s = await reopened(db_path)
        await s.ping()
        await s.aclose()
    assert schema_versions(db_path) == list(range(1, len(MIGRATIONS) + 1))


async def test_store_with_a_newer_schema_refuses_to_open(db_path: Path, event: Event) -> None:
    """A database written by a newer release is not touched: open() fails saying which versions and
    what to do, and the data is still there for that newer release."""
    s = await reopened(db_path)
    await s.create(event(), "p", State.BAKING, 1.0)
    await s.aclose()
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO schema_version VALUES (?)", (newer,))
    refused = SqliteStore(f"sqlite://{db_path}")
    try:
        with pytest.raises(StoreError) as caught:
            await refused.open()
    finally:
        await refused.aclose()
    message = str(caught.value)
    assert f"version {newer}" in message and f"({len(MIGRATIONS)})" in message
    assert "newer rollback-watchdog" in message
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM deployments").fetchone()[0] == 1


async def test_closed_store_says_so() -> None:
    """Using a store that is not open is a clear error, not an AttributeError on None."""
    s = SqliteStore("sqlite:///:memory:")
    with pytest.raises(RuntimeError, match="not open"):
        await s.ping()
    await s.open()
    await s.aclose()
    await s.aclose()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="not open"):
        await s.get("x")


# --- create -----------------------------------------------------------------------------------


async def test_create_records_the_event_and_a_created_audit_entry(store: SqliteStore, event: Event) -> None:
    """A new deployment keeps every field of its event, starts pending, and its audit trail says
    which source created it and why."""
    e = event()
    d, created = await store.create(e, "checkout-prod", State.BAKING, 100.0, "policy checkout-prod")
    assert created is True
    assert d.event == e
    assert (d.policy, d.state, d.verdict, d.reason) == (
        "checkout-prod",
        State.BAKING,
        Verdict.PENDING,
        "policy checkout-prod",
    )
    assert (d.created_at, d.updated_at, d.decided_at, d.polls) == (100.0, 100.0, None, 0)
    assert d.audit == (AuditEntry(100.0, "source:generic", "created", "policy checkout-prod"),)
    assert await store.get(d.id) == d


async def test_create_is_idempotent_by_source_and_event_id(store: SqliteStore, event: Event) -> None:
    """The same (source, event id) again returns the existing deployment, created=False, unchanged:
    a redelivered webhook never starts a second watch."""
    first, _ = await store.create(event(), "p", State.BAKING, 1.0)
    again, created = await store.create(event(version="v3"), "other", State.ABORTED, 2.0, "dup")
    assert created is False
    assert again == first
    assert await store.count_by_state() == {"baking": 1}


async def test_same_event_id_from_another_source_is_another_deployment(
    store: SqliteStore, event: Event
) -> None:
    """Event ids are only unique within their source."""
    a, _ = await store.create(event(), "p", State.BAKING, 1.0)
    b, created = await store.create(event(source="github"), "p", State.BAKING, 1.0)
    assert created and a.id != b.id


async def test_get_unknown_id_is_none(store: SqliteStore) -> None:
    """An unknown id is None, not an error."""
    assert await store.get("does-not-exist") is None


async def test_concurrent_creates_of_one_event_yield_one_row(store: SqliteStore, event: Event) -> None:
    """Five deliveries of the same event at once (asyncio.gather on one store): one row, exactly one
    created=True, every caller gets the same deployment."""
    results = await asyncio.gather(*(store.create(event(), "p", State.BAKING, 1.0) for _ in range(5)))
    assert sorted(created for _, created in results) == [False, False, False, False, True]
    assert len({d.id for d, _ in results}) == 1
    assert await store.count_by_state() == {"baking": 1}
    (d, _) = results[0]
    assert [a.action for a in (await store.get(d.id)).audit] == ["created"]  # type: ignore[union-attr]


async def test_concurrent_creates_of_different_events_all_succeed(store: SqliteStore, event: Event) -> None:
    """Webhooks for different deploys arriving together are each recorded (one shared connection
    must not let their transactions interleave)."""
    results = await asyncio.gather(*(store.create(event(f"e{i}"), "p", State.BAKING, 1.0) for i in range(5)))
    assert all(created for _, created in results)
    assert await store.count_by_state() == {"baking": 5}


# --- transition -------------------------------------------------------------------------------


async def test_transition_is_compare_and_set(store: SqliteStore, event: Event) -> None:
    """A transition applies only from an allowed state; the loser of a race gets StateConflict naming
    the actual state, and its audit entry is not written."""
    d, _ = await store.create(event(), "p", State.BAKING, 1.0)
    moved = await store.transition(
        d.id,
        (State.BAKING, State.PAUSED),
        State.ROLLING_BACK,
        2.0,
        audit=AuditEntry(2.0, "watchdog", "rollback.started"),
    )
    assert moved.state is State.ROLLING_BACK and moved.updated_at == 2.0
    with pytest.raises(StateConflict) as caught:
        await store.transition(
            d.id, (State.BAKING,), State.ABORTED, 3.0, audit=AuditEntry(3.0, "oncall", "abort")
        )
    assert "rolling_back" in str(caught.value) and "baking" in str(caught.value)
    after = await store.get(d.id)
    assert after is not None and after.state is State.ROLLING_BACK and after.updated_at == 2.0
    assert [a.action for a in after.audit] == ["created", "rollback.started"]


async def test_concurrent_transitions_exactly_one_wins(store: SqliteStore, event: Event) -> None:
    """Two deciders race BAKING → ROLLING_BACK: exactly one wins, the other gets StateConflict, and
    only the winner's audit entry is written. This is what "roll back exactly once" rests on."""
    d, _ = await store.create(event(), "p", State.BAKING, 1.0)
    results = await asyncio.gather(
        *(
            store.transition(
                d.id,
                (State.BAKING,),
                State.ROLLING_BACK,
                2.0,
                audit=AuditEntry(2.0, f"decider-{i}", "rollback.started"),
            )
            for i in range(2)
        ),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1, results
    assert len(losses) == 1 and isinstance(losses[0], StateConflict), results
    after = await store.get(d.id)
    assert after is not None
    assert [a.action for a in after.audit] == ["created", "rollback.started"]


async def test_transition_sets_verdict_reason_rollback_and_decided_once(
    store: SqliteStore, event: Event
) -> None:
    """Optional fields are written when given; `decided_at` keeps the first decision's time."""
    d, _ = await store.create(event(), "p", State.BAKING, 1.0)
    intent = {"target": "hook", "status": "started", "idempotency_key": f"{d.id}:rollback"}
    d = await store.transition(
        d.id,
        (State.BAKING,),
        State.ROLLING_BACK,
        5.0,
        verdict=Verdict.FAIL,
        reason="errors up",
        decided=True,
        rollback=intent,
    )
    assert (d.verdict, d.reason, d.decided_at, d.rollback) == (Verdict.FAIL, "errors up", 5.0, intent)
    d = await store.transition(d.id, (State.ROLLING_BACK,), State.ROLLED_BACK, 9.0, decided=True)
    assert d.decided_at == 5.0
    assert (d.verdict, d.reason, d.rollback) == (Verdict.FAIL, "errors up", intent), (
        "untouched when not given"
    )


async def test_transition_of_unknown_deployment_is_key_error(store: SqliteStore) -> None:
    """An id that does not exist is a KeyError, not a StateConflict."""
    with pytest.raises(KeyError):
        await store.transition("nope", (State.BAKING,), State.ABORTED, 1.0)


# --- polls, audit -----------------------------------------------------------------------------


async def test_record_poll_persists_checks_and_analysis(store: SqliteStore, event: Event) -> None:
    """A poll's reports and the engine's state are stored as given (a restart resumes from them)."""
    d, _ = await store.create(event(), "p", State.BAKING, 1.0)
    reports = (
        CheckReport("errors", Verdict.PENDING, "0.4 % vs 0.5 %", {"e_value": 1.7, "counts": [3, 1500]}),
        CheckReport("latency", Verdict.INCONCLUSIVE, "no data"),
    )
    analysis = {"errors": {"log_e": 0.53, "grid": [0.1, 0.2]}}
    await store.record_poll(d.id, 3, reports, analysis, 91.0)
    got = await store.get(d.id)
    assert got is not None
    assert (got.polls, got.checks, got.analysis, got.updated_at) == (3, reports, analysis, 91.0)
    assert got.state is State.BAKING


async def test_add_audit_appends_in_order(store: SqliteStore, event: Event) -> None:
    """Audit entries come back in the order written, with actor and detail."""
    d, _ = await store.create(event(), "p", State.BAKING, 1.0)
    await store.add_audit(d.id, AuditEntry(2.0, "oncall", "pause", "investigating"))
    await store.add_audit(d.id, AuditEntry(3.0, "oncall", "resume"))
    got = await store.get(d.id)
    assert got is not None
    assert got.audit[1:] == (
        AuditEntry(2.0, "oncall", "pause", "investigating"),
        AuditEntry(3.0, "oncall", "resume"),
    )


async def test_concurrent_writes_to_different_deployments_all_land(store: SqliteStore, event: Event) -> None:
    """Many watches share one store: polls, audit entries and transitions of different deployments
    written at once all land."""
    ids = [(await store.create(event(f"e{i}"), "p", State.BAKING, 1.0))[0].id for i in range(4)]
    await asyncio.gather(
        *(
            store.record_poll(i, 1, (CheckReport("errors", Verdict.PENDING, "ok"),), {"n": 1}, 2.0)
            for i in ids
        ),
        *(store.add_audit(i, AuditEntry(2.0, "oncall", "note")) for i in ids),
        *(
            store.transition(i, (State.BAKING,), State.PAUSED, 2.0, audit=AuditEntry(2.0, "oncall", "pause"))
            for i in ids
        ),
    )
    for i in ids:
        d = await store.get(i)
        assert d is not None and d.polls == 1 and d.state is State.PAUSED
        assert sorted(a.action for a in d.audit) == ["created", "note", "pause"]


# --- durability -------------------------------------------------------------------------------


async def test_state_survives_close_and_reopen(db_path: Path, event: Event) -> None:
    """After create, transition and a poll, a new process opening the same file sees all of it."""
    s = await reopened(db_path)
    d, _ = await s.create(event(), "p", State.BAKING, 1.0)
    await s.record_poll(
        d.id, 2, (CheckReport("errors", Verdict.PENDING, "fine", {"e": 1.0}),), {"k": [1]}, 60.0
    )
    await s.transition(
        d.id,
        (State.BAKING,),
        State.ROLLING_BACK,
        61.0,
        verdict=Verdict.FAIL,
        decided=True,
        rollback={"idempotency_key": f"{d.id}:rollback"},
        audit=AuditEntry(61.0, "watchdog", "rollback.started"),
    )
    expected = await s.get(d.id)
    await s.aclose()

    s = await reopened(db_path)
    try:
        assert await s.get(d.id) == expected
        assert [x.id for x in await s.active()] == [d.id]
        again, created = await s.create(event(), "p", State.BAKING, 99.0)
        assert created is False and again.id == d.id, "idempotency holds across restarts"
    finally:
        await s.aclose()


# --- queries ----------------------------------------------------------------------------------


async def test_page_newest_first_with_cursor(store: SqliteStore, event: Event) -> None:
    """Pages list newest first; following `next` walks every deployment once; the last page has
    next=None, also when the count is an exact multiple of the limit."""
    ids = [(await store.create(event(f"e{i}"), "p", State.BAKING, float(i)))[0].id for i in range(6)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.page(limit=2, cursor=cursor)
        pages += 1
        assert len(page.items) <= 2
        seen.extend(d.id for d in page.items)
        if page.next is None:
            break
        cursor = page.next
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_page_filters(store: SqliteStore, event: Event) -> None:
    """state, service and environment filter, alone and together."""
    a, _ = await store.create(event("a", service="checkout", environment="prod"), "p", State.BAKING, 1.0)
    b, _ = await store.create(event("b", service="checkout", environment="staging"), "p", State.BAKING, 2.0)
    c, _ = await store.create(event("c", service="search", environment="prod"), "p", State.ABORTED, 3.0)
    assert [d.id for d in (await store.page(service="checkout")).items] == [b.id, a.id]
    assert [d.id for d in (await store.page(environment="prod")).items] == [c.id, a.id]
    assert [d.id for d in (await store.page(state="aborted")).items] == [c.id]
    assert [d.id for d in (await store.page(service="checkout", environment="prod")).items] == [a.id]
    assert (await store.page(service="nothing")).items == []


async def test_page_filter_with_cursor(store: SqliteStore, event: Event) -> None:
    """The cursor continues the filtered list, not the whole table."""
    for i in range(5):
        await store.create(
            event(f"e{i}", service="checkout" if i % 2 == 0 else "search"), "p", State.BAKING, float(i)
        )
    first = await store.page(service="checkout", limit=2)
    second = await store.page(service="checkout", limit=2, cursor=first.next)
    assert [d.event.event_id for d in first.items + second.items] == ["e4", "e2", "e0"]
    assert second.next is None


async def test_last_passed_version(store: SqliteStore, event: Event) -> None:
    """The newest version of this service and environment whose watch passed; other states,
    services and environments do not count; None when nothing passed."""
    assert await store.last_passed_version("checkout", "prod") is None
    for event_id, version, state, env in [
        ("1", "v1", State.PASSED, "prod"),
        ("2", "v2", State.PASSED, "prod"),
        ("3", "v3", State.ROLLED_BACK, "prod"),
        ("4", "v4", State.BAKING, "prod"),
        ("5", "v5", State.PASSED, "staging"),
    ]:
        d, _ = await store.create(event(event_id, version=version, environment=env), "p", State.BAKING, 1.0)
        if state is not State.BAKING:
            await store.transition(d.id, (State.BAKING,), state, 2.0)
    await store.create(event("6", service="search", version="s9"), "p", State.BAKING, 1.0)
    assert await store.last_passed_version("checkout", "prod") == "v2"
    assert await store.last_passed_version("checkout", "staging") == "v5"
    assert await store.last_passed_version("search", "prod") is None


async def test_count_by_state_and_active(store: SqliteStore, event: Event) -> None:
    """count_by_state counts each state present; active() is what a Watch or an unfinished rollback
    owns (baking, paused, rolling_back), oldest first."""
    states = [State.BAKING, State.PAUSED, State.ROLLING_BACK, State.PASSED, State.ABORTED, State.BAKING]
    ids = []
    for i, state in enumerate(states):
        d, _ = await store.create(event(f"e{i}"), "p", State.BAKING, float(i))
        if state is not State.BAKING:
            await store.transition(d.id, (State.BAKING,), state, float(i))
        ids.append(d.id)
    assert await store.count_by_state() == {
        "baking": 2,
        "paused": 1,
        "rolling_back": 1,
        "passed": 1,
        "aborted": 1,
    }
    assert [d.id for d in await store.active()] == [ids[0], ids[1], ids[2], ids[5]]


async def test_empty_store_queries(store: SqliteStore) -> None:
    """An empty store answers every query with an empty result."""
    assert await store.count_by_state() == {}
    assert await store.active() == []
    page = await store.page()
    assert page.items == [] and page.next is None
