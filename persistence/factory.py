"""Pick a DocumentStore backend from its URL; backends are imported only when chosen."""

from __future__ import annotations

from urllib.parse import urlsplit

from collab_server.errors import ConfigError
from collab_server.secrets import redact_url
from persistence.base import DocumentStore
from persistence.migrate import Migration
from persistence.room_store import RoomStore


async def open_store(
    url: str,
    *,
    keep_versions: int = 10,
    max_version_age: float = 0.0,
    auto_migrate: bool = True,
    pool_size: int = 10,
    timeout: float = 10.0,
) -> DocumentStore:
    """Open the store named by ``url``: ``sqlite:///path``, ``memory://`` or ``postgresql://…``.

    ``auto_migrate`` concerns the SQL stores; ``pool_size`` and ``timeout`` PostgreSQL only.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from persistence.memory import MemoryStore

        return MemoryStore(keep_versions=keep_versions, max_version_age=max_version_age)
    if scheme == "sqlite":
        from persistence.sqlite import SQLiteStore

        return await SQLiteStore(
            sqlite_path(url), keep_versions=keep_versions, max_version_age=max_version_age, auto_migrate=auto_migrate
        ).open()
    if scheme in {"postgres", "postgresql"}:
        try:
            from persistence.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(f"COLLAB_DATABASE_URL: the PostgreSQL backend is unavailable ({exc})") from exc
        return await PostgresStore.connect(
            url,
            keep_versions=keep_versions,
            max_version_age=max_version_age,
            pool_size=pool_size,
            timeout=timeout,
            auto_migrate=auto_migrate,
        )
    raise _unknown_scheme(url)


async def open_room_store(
    url: str, *, auto_migrate: bool = True, timeout: float = 10.0, pool_size: int = 4
) -> RoomStore:
    """Open the RoomStore that lives beside the document store ``url`` names (same database)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from persistence.room_store_memory import MemoryRoomStore

        return MemoryRoomStore()
    if scheme == "sqlite":
        from persistence.room_store_sqlite import SQLiteRoomStore

        return await SQLiteRoomStore(sqlite_path(url), auto_migrate=auto_migrate).open()
    if scheme in {"postgres", "postgresql"}:
        from persistence.room_store_postgres import PostgresRoomStore

        return await PostgresRoomStore.connect(url, pool_size=pool_size, timeout=timeout, auto_migrate=auto_migrate)
    raise _unknown_scheme(url)


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (SQLAlchemy's spelling)."""
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    if not path:
        raise ConfigError(f"COLLAB_DATABASE_URL={redact_url(url)}: sqlite URLs look like sqlite:///collab.sqlite3")
    return path


def _unknown_scheme(url: str) -> ConfigError:
    scheme = urlsplit(url).scheme
    return ConfigError(
        f"COLLAB_DATABASE_URL={redact_url(url)}: unknown scheme {scheme!r} (use sqlite://, memory:// or postgresql://)"
    )


async def migrate_store(url: str, *, timeout: float = 10.0) -> list[Migration] | None:
    """Apply pending migrations to the SQL database ``url`` names and return them; None for a store
    without a schema (``memory://``). ``collab-server migrate`` runs this."""
    scheme = urlsplit(url).scheme
    if scheme in {"postgres", "postgresql"}:
        from persistence.postgres_schema import migrate_url

        return await migrate_url(url, timeout=timeout)
    if scheme == "sqlite":
        from persistence.sqlite import SQLiteStore

        store = await SQLiteStore(sqlite_path(url)).open()
        await store.close()
        return store.migrations_applied
    if scheme == "memory":
        return None
    raise _unknown_scheme(url)
