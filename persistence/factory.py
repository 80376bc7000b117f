"""Pick a DocumentStore backend from its URL; backends are imported only when chosen."""

from __future__ import annotations

from urllib.parse import urlsplit

from collab_server.errors import ConfigError
from persistence.base import DocumentStore


async def open_store(url: str, *, keep_versions: int = 10) -> DocumentStore:
    """Open the store named by ``url``: ``sqlite:///path``, ``memory://`` or ``postgresql://…``."""
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
            from persistence.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(f"COLLAB_DATABASE_URL: the PostgreSQL backend is unavailable ({exc})") from exc
        return await PostgresStore.connect(url, keep_versions=keep_versions)  # type: ignore[no-any-return]
    raise ConfigError(
        f"COLLAB_DATABASE_URL={url!r}: unknown scheme {scheme!r} (use sqlite://, memory:// or postgresql://)"
    )
