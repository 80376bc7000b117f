"""Schema migrations: plain SQL files applied in order, recorded with checksums, for every SQL backend.

Files live in ``persistence/migrations/<dialect>/`` (``postgres``, ``sqlite``) and are named
``NNNN_what_it_does.sql``; the number is the version. Each file runs in its own transaction together with
the row that records it in ``schema_migrations``, so a failed migration leaves nothing half-applied. An
applied file that was edited afterwards is refused (its checksum no longer matches): migrations are
history, a change is a new file.

This module knows no database driver. A backend hands the runner a ``SchemaTarget``: a lock that
serialises runners (PostgreSQL: an advisory lock, so replicas starting together apply each migration
once), the recorded history, and "apply this file and record it in one transaction".
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from collab_server.errors import StoreError

logger = logging.getLogger(__name__)

_PACKAGE = "persistence.migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

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


Recorded = dict[int, tuple[str, str]]
"""``{version: (name, checksum)}`` as recorded in ``schema_migrations``."""


class SchemaTarget(Protocol):
    """One database connection, as the runner needs it."""

    async def lock(self) -> None:
        """Serialise runners; released by ``unlock`` (or with the connection)."""
        ...

    async def unlock(self) -> None: ...

    async def recorded(self) -> Recorded:
        """The history; empty when ``schema_migrations`` does not exist yet."""
        ...

    async def apply(self, migration: Migration) -> None:
        """Create the history table if needed, run the file and record it, in one transaction."""
        ...


def load_migrations(dialect: str) -> list[Migration]:
    """The migration files shipped with the package for ``dialect``, in version order."""
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


def unapplied(recorded: Recorded, known: Sequence[Migration]) -> list[Migration]:
    """The known migrations not applied yet; MigrationError if an applied one was changed."""
    for migration in known:
        entry = recorded.get(migration.version)
        if entry is not None and entry[1] != migration.checksum:
            raise MigrationError(
                f"migration {migration} was changed after it was applied (checksum differs); "
                "add a new migration instead of editing an applied one"
            )
    newer = sorted(set(recorded) - {m.version for m in known})
    if newer:
        # A newer replica migrated already (a rolling upgrade): migrations are additive, so keep going.
        logger.warning("database has migrations this server does not know: %s", newer)
    return [m for m in known if m.version not in recorded]


async def pending(target: SchemaTarget, known: Sequence[Migration]) -> list[Migration]:
    """Migrations this code has that the database has not applied."""
    return unapplied(await target.recorded(), known)


async def migrate(target: SchemaTarget, known: Sequence[Migration]) -> list[Migration]:
    """Apply every pending migration, in order; returns those applied now."""
    await target.lock()
    try:
        # Read the history only under the lock: another runner may just have applied some of it.
        todo = unapplied(await target.recorded(), known)
        for migration in todo:
            await target.apply(migration)
            logger.info("applied migration %s", migration)
        return todo
    finally:
        await target.unlock()


async def require_current(target: SchemaTarget, known: Sequence[Migration]) -> None:
    """MigrationError unless every known migration is applied (``COLLAB_AUTO_MIGRATE=off``)."""
    todo = await pending(target, known)
    if todo:
        raise MigrationError(
            f"the database schema lacks migrations {', '.join(map(str, todo))} and "
            "COLLAB_AUTO_MIGRATE is off: run `collab-server migrate` first"
        )
