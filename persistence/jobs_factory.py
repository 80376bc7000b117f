"""Pick a JobStore backend from the database URL (the same URL as the documents); imported when chosen."""

from __future__ import annotations

from urllib.parse import urlsplit

from collab_server.errors import ConfigError
from persistence.factory import sqlite_path
from persistence.jobs import JobStore


async def open_job_store(url: str, *, auto_migrate: bool = True, timeout: float = 10.0) -> JobStore:
    """``memory://`` (jobs live and die with this process), ``sqlite:///path`` or ``postgresql://…``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from persistence.jobs_memory import MemoryJobStore

        return MemoryJobStore()
    if scheme == "sqlite":
        from persistence.jobs_sqlite import SQLiteJobStore

        return await SQLiteJobStore(sqlite_path(url)).open()
    if scheme in {"postgres", "postgresql"}:
        from persistence.jobs_postgres import PostgresJobStore

        return await PostgresJobStore.connect(url, timeout=timeout, auto_migrate=auto_migrate)
    raise ConfigError(f"COLLAB_DATABASE_URL: no job store for scheme {scheme!r}")
