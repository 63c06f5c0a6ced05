"""SQLite store (the default): one file, WAL, ``synchronous=FULL`` so a committed state change
survives a power cut before its side effect runs.

One aiosqlite connection serialises every statement, which is what SQLite wants anyway; the
workload is a few writes per poll per deployment.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import aiosqlite

from watchdog.errors import StateConflict, StoreError
from watchdog.model import AuditEntry, CheckReport, DeployEvent, Deployment, State, Verdict
from watchdog.store.base import Page

# Append-only: a released migration is never edited, a new one is added.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deployments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        service TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT NOT NULL,
        baseline_version TEXT,
        strategy TEXT,
        target TEXT NOT NULL,
        labels TEXT NOT NULL,
        policy TEXT,
        state TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        decided_at REAL,
        polls INTEGER NOT NULL DEFAULT 0,
        checks TEXT NOT NULL DEFAULT '[]',
        analysis TEXT NOT NULL DEFAULT '{}',
        rollback TEXT NOT NULL DEFAULT '{}',
        UNIQUE (source, event_id)
    );
    CREATE INDEX deployments_state ON deployments (state);
    CREATE INDEX deployments_service_env ON deployments (service, environment, seq);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL REFERENCES deployments (id),
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_deployment ON audit (deployment_id, seq);
    """,
)

_ACTIVE = tuple(s.value for s in State if s.active)


def sqlite_path(url: str) -> str:
    """``sqlite:///var/lib/x.db`` → ``/var/lib/x.db``; ``sqlite:///:memory:`` → ``:memory:``."""
    rest = url.removeprefix("sqlite://")
    return ":memory:" if rest in ("/:memory:", ":memory:", "") else rest


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every coroutine: a transaction must not interleave with
        # another's statements, so every write holds this lock.
        self._write = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()

    async def _migrate(self) -> None:
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with self.db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the store's schema is version {current}, newer than this release knows "
                f"({len(MIGRATIONS)}): run a newer rollback-watchdog"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await self.db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nINSERT INTO schema_version VALUES ({version});\nCOMMIT;"
            )

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cur:
            await cur.fetchone()

    async def create(
        self, event: DeployEvent, policy: str | None, state: State, now: float, reason: str = ""
    ) -> tuple[Deployment, bool]:
        new_id = uuid.uuid4().hex
        async with self._write:
            created = await self._insert(new_id, event, policy, state, now, reason)
        async with self.db.execute(
            "SELECT id FROM deployments WHERE source = ? AND event_id = ?",
            (event.source, event.event_id),
        ) as c:
            row = await c.fetchone()
        assert row is not None
        deployment = await self.get(row["id"])
        assert deployment is not None
        return deployment, created

    async def _insert(
        self, new_id: str, event: DeployEvent, policy: str | None, state: State, now: float, reason: str
    ) -> bool:
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = await self.db.execute(
                """INSERT INTO deployments (id, source, event_id, service, environment, version,
                       baseline_version, strategy, target, labels, policy, state, verdict, reason,
                       created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (source, event_id) DO NOTHING""",
                (
                    new_id,
                    event.source,
                    event.event_id,
                    event.service,
                    event.environment,
                    event.version,
                    event.baseline_version,
                    event.strategy,
                    json.dumps(event.target),
                    json.dumps(event.labels),
                    policy,
                    state.value,
                    Verdict.PENDING.value,
                    reason,
                    now,
                    now,
                ),
            )
            created = cur.rowcount == 1
            if created:
                await self._insert_audit(new_id, AuditEntry(now, f"source:{event.source}", "created", reason))
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return created

    async def get(self, deployment_id: str) -> Deployment | None:
        async with self.db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)) as c:
            row = await c.fetchone()
        return None if row is None else await self._hydrate(row)

    async def page(
        self,
        *,
        state: str | None = None,
        service: str | None = None,
        environment: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        where: list[str] = []
        args: list[object] = []
        for column, value in (("state", state), ("service", service), ("environment", environment)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if cursor is not None:
            where.append("seq < ?")
            args.append(int(cursor))
        sql = "SELECT * FROM deployments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        async with self.db.execute(sql, (*args, limit + 1)) as c:
            rows = list(await c.fetchall())
        more = len(rows) > limit
        rows = rows[:limit]
        items = [await self._hydrate(r) for r in rows]
        return Page(items=items, next=str(rows[-1]["seq"]) if more and rows else None)

    async def active(self) -> list[Deployment]:
        marks = ",".join("?" * len(_ACTIVE))
        async with self.db.execute(
            f"SELECT * FROM deployments WHERE state IN ({marks}) ORDER BY seq", _ACTIVE
        ) as c:
            rows = list(await c.fetchall())
        return [await self._hydrate(r) for r in rows]

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
        sets = ["state = ?", "updated_at = ?"]
        args: list[Any] = [to.value, now]
        if verdict is not None:
            sets.append("verdict = ?")
            args.append(verdict.value)
        if reason is not None:
            sets.append("reason = ?")
            args.append(reason)
        if decided:
            sets.append("decided_at = COALESCE(decided_at, ?)")
            args.append(now)
        if rollback is not None:
            sets.append("rollback = ?")
            args.append(json.dumps(rollback))
        froms = [s.value for s in allowed_from]
        marks = ",".join("?" * len(froms))
        async with self._write:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = await self.db.execute(
                    f"UPDATE deployments SET {', '.join(sets)} WHERE id = ? AND state IN ({marks})",
                    (*args, deployment_id, *froms),
                )
                if cur.rowcount == 1 and audit is not None:
                    await self._insert_audit(deployment_id, audit)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        current = await self.get(deployment_id)
        if current is None:
            raise KeyError(deployment_id)
        if cur.rowcount != 1:
            raise StateConflict(
                f"deployment {deployment_id} is {current.state.value}; "
                f"{to.value} needs it to be {' or '.join(froms)}"
            )
        return current

    async def record_poll(
        self,
        deployment_id: str,
        polls: int,
        checks: tuple[CheckReport, ...],
        analysis: dict[str, Any],
        now: float,
    ) -> None:
        row = (polls, json.dumps([c.to_json() for c in checks]), json.dumps(analysis), now, deployment_id)
        async with self._write:
            await self.db.execute(
                "UPDATE deployments SET polls = ?, checks = ?, analysis = ?, updated_at = ? WHERE id = ?", row
            )

    async def add_audit(self, deployment_id: str, entry: AuditEntry) -> None:
        async with self._write:
            await self._insert_audit(deployment_id, entry)

    async def last_passed_version(self, service: str, environment: str) -> str | None:
        async with self.db.execute(
            """SELECT version FROM deployments WHERE service = ? AND environment = ? AND state = ?
               ORDER BY seq DESC LIMIT 1""",
            (service, environment, State.PASSED.value),
        ) as c:
            row = await c.fetchone()
        return None if row is None else str(row["version"])

    async def count_by_state(self) -> dict[str, int]:
        async with self.db.execute("SELECT state, COUNT(*) FROM deployments GROUP BY state") as c:
            rows = await c.fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    async def _insert_audit(self, deployment_id: str, entry: AuditEntry) -> None:
        await self.db.execute(
            "INSERT INTO audit (deployment_id, at, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
            (deployment_id, entry.at, entry.actor, entry.action, entry.detail),
        )

    async def _hydrate(self, row: aiosqlite.Row) -> Deployment:
        async with self.db.execute(
            "SELECT at, actor, action, detail FROM audit WHERE deployment_id = ? ORDER BY seq",
            (row["id"],),
        ) as c:
            audit = tuple(AuditEntry(r[0], r[1], r[2], r[3]) for r in await c.fetchall())
        event = DeployEvent(
            source=row["source"],
            event_id=row["event_id"],
            service=row["service"],
            environment=row["environment"],
            version=row["version"],
            baseline_version=row["baseline_version"],
            strategy=row["strategy"],
            target=json.loads(row["target"]),
            labels=json.loads(row["labels"]),
        )
        return Deployment(
            id=row["id"],
            event=event,
            policy=row["policy"],
            state=State(row["state"]),
            verdict=Verdict(row["verdict"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            decided_at=row["decided_at"],
            reason=row["reason"],
            polls=row["polls"],
            checks=tuple(CheckReport.from_json(c) for c in json.loads(row["checks"])),
            analysis=json.loads(row["analysis"]),
            rollback=json.loads(row["rollback"]),
            audit=audit,
        )
