"""The migration runner's view of a SQLite file (``persistence.migrate.SchemaTarget``).

The whole run is one write transaction (``BEGIN IMMEDIATE`` in ``lock``, ``COMMIT`` in ``unlock``):
SQLite's DDL is transactional, and holding the write lock from reading the history to the last file means
two processes opening a new file at once apply each migration once. Statements are run one by one:
``executescript`` would commit the open transaction first.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

from persistence import migrate as migrations
from persistence.migrate import Migration, Recorded

T = TypeVar("T")

_HISTORY_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at REAL    NOT NULL
)
"""

def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of ``script``, in order (comments and blank lines dropped)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")


class SQLiteSchema:
    """``SchemaTarget`` on an autocommit (``isolation_level=None``) sqlite3 connection.

    Its coroutines never await: ``SQLiteStore`` drives the runner to completion on its own database
    thread (``asyncio.run`` there), where blocking is expected.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def lock(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    async def unlock(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    async def recorded(self) -> Recorded:
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if exists is None:
            return {}
        rows = self._conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
        return {version: (name, checksum) for version, name, checksum in rows}

    async def apply(self, migration: Migration) -> None:
        try:
            self._conn.execute(_HISTORY_TABLE)
            for statement in statements(migration.sql):
                self._conn.execute(statement)
            self._conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, migration.checksum, time.time()),
            )
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise


def switch_to_wal(conn: sqlite3.Connection, patience: float = 5.0) -> None:
    """Put the file in WAL mode. Another connection opening the same new file (a second process,
    ``collab-server migrate``) can hold a lock for a moment, and SQLite answers this pragma with "database
    is locked" at once instead of waiting on busy_timeout: so wait here, briefly and bounded."""
    deadline = time.monotonic() + patience
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def open_database(path: Path, *, auto_migrate: bool = True) -> tuple[sqlite3.Connection, list[Migration]]:
    """Open the file (WAL, a busy timeout) and bring its schema up to date, or check that it is; returns
    the connection and the migrations applied now. Every SQLite store of the server opens its file here,
    on its own database thread (the runner's coroutines never await on SQLite)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        switch_to_wal(conn)
        # In WAL mode NORMAL survives a crash of this process (the case the server must handle); a power
        # cut may lose the last commits, which clients re-send on their next sync.
        conn.execute("PRAGMA synchronous=NORMAL")
        schema, known = SQLiteSchema(conn), migrations.load_migrations("sqlite")
        if auto_migrate:
            applied = asyncio.run(migrations.migrate(schema, known))
        else:
            asyncio.run(migrations.require_current(schema, known))
            applied = []
    except BaseException:
        conn.close()
        raise
    return conn, applied


def write_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a write transaction (``BEGIN IMMEDIATE``: the write lock first, so what it reads
    cannot change before it writes); rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result
