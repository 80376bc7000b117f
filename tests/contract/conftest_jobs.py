"""JobStore backends for the contract tests: ``open_jobs`` opens stores on one shared backend, so two
openers are two workers' connections (memory: one shared store)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from persistence.jobs import JobStore
from persistence.jobs_memory import MemoryJobStore
from persistence.jobs_sqlite import SQLiteJobStore

Opener = Callable[[], Awaitable[JobStore]]


async def _truncate(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute("TRUNCATE exports")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def open_jobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[JobStore] = []
    if request.param == "memory":
        shared = MemoryJobStore()

        async def opener() -> JobStore:
            return shared
    elif request.param == "sqlite":
        async def opener() -> JobStore:
            store = await SQLiteJobStore(tmp_path / "jobs.sqlite3").open()
            opened.append(store)
            return store
    else:
        url: str = request.getfixturevalue("postgres_url")
        from persistence.jobs_postgres import PostgresJobStore

        await (await PostgresJobStore.connect(url)).close()  # migrated
        await _truncate(url)

        async def opener() -> JobStore:
            store = await PostgresJobStore.connect(url)
            opened.append(store)
            return store
    yield opener
    for store in opened:
        await store.close()
