"""Schema migrations for PostgreSQL: plain SQL files applied in order, recorded in a table.

Files live in ``persistence/migrations/postgres/`` and are named ``NNNN_what_it_does.sql``; the number is
the version. Each file runs in its own transaction together with the row that records it, so a failed
migration leaves nothing half-applied. A session advisory lock serialises runners, so replicas starting
at the same time apply each migration once. An applied file that was edited afterwards is refused
(its checksum no longer matches): migrations are history, a change is a new file.

Files run in a transaction, so statements that cannot (``CREATE INDEX CONCURRENTLY``) need a new
mechanism before they can be used here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from collab_server.errors import StoreError

logger = logging.getLogger(__name__)

_PACKAGE = "persistence.migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Key of the advisory lock held while migrating; the first half spells "coll" and namespaces our locks.
_LOCK_NAMESPACE = 0x636F6C6C
_LOCK_MIGRATE = 0

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(StoreError):
    """The schema cannot be brought to (or is not at) the version this code needs."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def __str__(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load_migrations(dialect: str = "postgres") -> list[Migration]:
    """The migration files shipped with the package, in version order."""
    folder = resources.files(_PACKAGE).joinpath(dialect)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:04d}: {found[version]} and {entry.name}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def applied_versions(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    """``{version: (name, checksum)}`` recorded in the database; empty if it was never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: (row["name"], row["checksum"]) for row in rows}


def _check_history(applied: dict[int, tuple[str, str]], known: list[Migration]) -> list[Migration]:
    """The known migrations not applied yet; MigrationError if an applied one was changed."""
    for migration in known:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded[1] != migration.checksum:
            raise MigrationError(
                f"migration {migration} was changed after it was applied (checksum differs); "
                "add a new migration instead of editing an applied one"
            )
    newer = sorted(set(applied) - {m.version for m in known})
    if newer:
        # A newer replica migrated already (a rolling upgrade): migrations are additive, so keep going.
        logger.warning("database has migrations this server does not know: %s", newer)
    return [m for m in known if m.version not in applied]


async def pending(conn: asyncpg.Connection, known: list[Migration] | None = None) -> list[Migration]:
    """Migrations this code has that the database has not applied."""
    known = load_migrations() if known is None else known
    return _check_history(await applied_versions(conn), known)


async def migrate(conn: asyncpg.Connection, known: list[Migration] | None = None) -> list[Migration]:
    """Apply every pending migration, in order; returns those applied now."""
    known = load_migrations() if known is None else known
    await conn.execute("SELECT pg_advisory_lock($1, $2)", _LOCK_NAMESPACE, _LOCK_MIGRATE)
    try:
        await conn.execute(_CREATE_TABLE)
        # Read the history only under the lock: another runner may just have applied some of it.
        todo = _check_history(await applied_versions(conn), known)
        for migration in todo:
            async with conn.transaction():
                await conn.execute(migration.sql)  # no arguments: simple protocol, several statements
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            logger.info("applied migration %s", migration)
        return todo
    finally:
        # A lost connection took the lock with it; an unlock error must not hide the real failure.
        if not conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", _LOCK_NAMESPACE, _LOCK_MIGRATE)


async def migrate_url(url: str, *, timeout: float = 10.0) -> list[Migration]:
    """Connect to ``url``, apply pending migrations, disconnect (``collab-server migrate``)."""
    from persistence.postgres import translate_errors

    async with translate_errors("migrate"):
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            return await migrate(conn)
        finally:
            await conn.close()
