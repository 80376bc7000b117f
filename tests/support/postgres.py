"""A throwaway PostgreSQL database per test session, on the server at 127.0.0.1:5432.

``COLLAB_TEST_POSTGRES_URL`` names the server (an admin connection; default the local trust-auth
``postgres`` user). Each session creates a database with a unique name and drops it at the end, so
parallel runs and other users of the server never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

T = TypeVar("T")

ADMIN_URL = os.environ.get("COLLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tables the document store writes; emptied between tests (cheaper than a database per test).
DOCUMENT_TABLES = ("room_updates", "room_snapshots", "room_quarantine")


def run_sync(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even code called inside a running event loop
    (a session fixture first requested by an async fixture): on a thread with its own loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


def database_url(name: str, admin_url: str = ADMIN_URL) -> str:
    return urlsplit(admin_url)._replace(path=f"/{name}").geturl()


async def _admin(sql: str, admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def reachable(admin_url: str = ADMIN_URL) -> str | None:
    """None if the server answers, else why not."""
    try:
        await _admin("SELECT 1", admin_url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def temporary_database(prefix: str = "collab_test", admin_url: str = ADMIN_URL) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it (even if a test left connections)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    run_sync(lambda: _admin(f'CREATE DATABASE "{name}"', admin_url))
    try:
        yield database_url(name, admin_url)
    finally:
        # WITH (FORCE) (PostgreSQL 13+) ends connections a killed server process left behind.
        run_sync(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_url))


async def empty_document_tables(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f"TRUNCATE {', '.join(DOCUMENT_TABLES)}")
    finally:
        await conn.close()
