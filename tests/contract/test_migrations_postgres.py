"""Schema migrations: applied once, in order, recorded; refused when history was edited; `collab-server
migrate` and the automatic run at startup agree. Each test gets a database of its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from collab_server.errors import StoreError
from persistence import migrate as runner
from persistence.migrate import Migration, MigrationError
from persistence.postgres import PostgresStore
from persistence.postgres_schema import PostgresSchema
from tests.support.postgres import reachable, temporary_database
from tests.support.servers import REPO


@pytest.fixture
async def fresh_url() -> AsyncIterator[str]:
    problem = await reachable()
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable ({problem})")
    with temporary_database("collab_migrate") as url:
        yield url


def load_migrations() -> list[Migration]:
    return runner.load_migrations("postgres")


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    return await runner.migrate(PostgresSchema(conn), load_migrations())


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    return await runner.pending(PostgresSchema(conn), load_migrations())


async def _recorded(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(row["version"], row["name"]) for row in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_the_shipped_migrations_are_numbered_from_one_without_gaps(dialect: str) -> None:
    versions = [m.version for m in runner.load_migrations(dialect)]
    assert versions == list(range(1, len(versions) + 1))


async def test_migrations_apply_once_in_order_and_are_recorded(fresh_url: str) -> None:
    known = load_migrations()
    conn = await asyncpg.connect(fresh_url)
    try:
        assert [m.version for m in await pending(conn)] == [m.version for m in known]
        assert await migrate(conn) == known
        assert await migrate(conn) == []
        assert await pending(conn) == []
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"room_updates", "room_snapshots", "rooms", "room_participants", "exports"} <= tables
    finally:
        await conn.close()
    assert await _recorded(fresh_url) == [(m.version, m.name) for m in known]


async def test_replicas_starting_together_apply_each_migration_once(fresh_url: str) -> None:
    conns = [await asyncpg.connect(fresh_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(len(applied) for applied in results) == [0, 0, len(load_migrations())]
    assert len(await _recorded(fresh_url)) == len(load_migrations())


async def test_an_applied_migration_that_was_edited_is_refused(fresh_url: str) -> None:
    store = await PostgresStore.connect(fresh_url)
    await store.close()
    conn = await asyncpg.connect(fresh_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="0001_document_store was changed after it was applied"):
            await pending(conn)
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="changed after it was applied"):
        await PostgresStore.connect(fresh_url)


async def test_without_auto_migrate_an_unmigrated_database_is_refused(fresh_url: str) -> None:
    with pytest.raises(MigrationError, match="collab-server migrate"):
        await PostgresStore.connect(fresh_url, auto_migrate=False)
    store = await PostgresStore.connect(fresh_url)  # the default migrates
    await store.close()
    store = await PostgresStore.connect(fresh_url, auto_migrate=False)  # now up to date: accepted
    await store.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab_server", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


async def test_the_migrate_command_applies_pending_migrations_and_exits(fresh_url: str) -> None:
    first = await asyncio.to_thread(_cli, "migrate", "--database-url", fresh_url)
    assert first.returncode == 0, first.stderr
    assert "applied " + ", ".join(map(str, load_migrations())) in first.stdout
    second = await asyncio.to_thread(_cli, "migrate", "--database-url", fresh_url)
    assert second.returncode == 0, second.stderr
    assert "schema is up to date" in second.stdout
    assert len(await _recorded(fresh_url)) == len(load_migrations())


def test_the_migrate_command_explains_an_unreachable_database() -> None:
    result = _cli("migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/none", "--database-timeout", "2")
    assert result.returncode == 1
    assert "collab-server migrate: postgresql migrate" in result.stderr
