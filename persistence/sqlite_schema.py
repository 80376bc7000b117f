"""The migration runner's view of a SQLite file (``persistence.migrate.SchemaTarget``).

The whole run is one write transaction (``BEGIN IMMEDIATE`` in ``lock``, ``COMMIT`` in ``unlock``):
SQLite's DDL is transactional, and holding the write lock from reading the history to the last file means
two processes opening a new file at once apply each migration once. Statements are run one by one:
``executescript`` would commit the open transaction first.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Final

from persistence.migrate import Migration, Recorded

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
