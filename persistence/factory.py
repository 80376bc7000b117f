"""Pick a DocumentStore backend from its URL; backends are imported only when chosen."""

from __future__ import annotations

from urllib.parse import urlsplit

from collab_server.errors import ConfigError
from persistence.base import DocumentStore


async def open_store(
    url: str,
    *,
    keep_versions: int = 10,
    auto_migrate: bool = True,
    pool_size: int = 10,
    timeout: float = 10.0,
) -> DocumentStore:
    """Open the store named by ``url``: ``sqlite:///path``, ``memory://`` or ``postgresql://…``.

    ``auto_migrate``, ``pool_size`` and ``timeout`` concern PostgreSQL only.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from persistence.memory import MemoryStore

        return MemoryStore(keep_versions=keep_versions)
    if scheme == "sqlite":
        from persistence.sqlite import SQLiteStore

        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"COLLAB_DATABASE_URL={url!r}: sqlite URLs look like sqlite:///collab.sqlite3")
        return await SQLiteStore(path, keep_versions=keep_versions).open()
    if scheme in {"postgres", "postgresql"}:
        try:
            from persistence.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(f"COLLAB_DATABASE_URL: the PostgreSQL backend is unavailable ({exc})") from exc
        return await PostgresStore.connect(
            url, keep_versions=keep_versions, pool_size=pool_size, timeout=timeout, auto_migrate=auto_migrate
        )
    raise ConfigError(
        f"COLLAB_DATABASE_URL={url!r}: unknown scheme {scheme!r} (use sqlite://, memory:// or postgresql://)"
    )
