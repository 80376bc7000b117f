"""The migration runner's view of a PostgreSQL connection (``persistence.migrate.SchemaTarget``).

A session advisory lock serialises runners, so replicas starting at the same time apply each migration
once. Files run in a transaction, so statements that cannot (``CREATE INDEX CONCURRENTLY``) need a new
mechanism before they can be used here.
"""

from __future__ import annotations

import contextlib
from typing import Final

import asyncpg

from persistence import migrate as migrations
from persistence.migrate import Migration, Recorded
from persistence.postgres_errors import LOCK_NAMESPACE, translate_errors

_LOCK_MIGRATE: Final = 0

_HISTORY_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class PostgresSchema:
    """``SchemaTarget`` on one asyncpg connection (not a pooled one: the lock is session state)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock(self) -> None:
        await self._conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_NAMESPACE, _LOCK_MIGRATE)

    async def unlock(self) -> None:
        # A lost connection took the lock with it; an unlock error must not hide the real failure.
        if not self._conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await self._conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_NAMESPACE, _LOCK_MIGRATE)

    async def recorded(self) -> Recorded:
        if not await self._conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            return {}
        rows = await self._conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        return {row["version"]: (row["name"], row["checksum"]) for row in rows}

    async def apply(self, migration: Migration) -> None:
        async with self._conn.transaction():
            await self._conn.execute(_HISTORY_TABLE)
            await self._conn.execute(migration.sql)  # no arguments: simple protocol, several statements
            await self._conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )


async def prepare_schema(url: str, *, timeout: float = 10.0, auto_migrate: bool = True) -> None:
    """Bring the schema up to date (or, with ``auto_migrate`` off, refuse one that is behind), on a
    connection of its own: the runner takes a session-level advisory lock, and pooled connections must
    never carry session state. Every PostgreSQL store calls this before opening its pool."""
    async with translate_errors("migrate"):
        conn = await asyncpg.connect(url, timeout=timeout, command_timeout=timeout)
        try:
            schema, known = PostgresSchema(conn), migrations.load_migrations("postgres")
            if auto_migrate:
                await migrations.migrate(schema, known)
            else:
                await migrations.require_current(schema, known)
        finally:
            await conn.close(timeout=timeout)


async def migrate_url(url: str, *, timeout: float = 10.0) -> list[Migration]:
    """Connect to ``url``, apply pending migrations, disconnect (``collab-server migrate``)."""
    async with translate_errors("migrate"):
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            return await migrations.migrate(PostgresSchema(conn), migrations.load_migrations("postgres"))
        finally:
            await conn.close()
