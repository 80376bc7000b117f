"""SQLite runs the same migration runner as PostgreSQL: applied once at open, recorded with checksums,
refused when history was edited or when auto-migration is off and the file is behind."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from collab_server.errors import StoreError
from persistence import migrate as runner
from persistence.migrate import MigrationError
from persistence.sqlite import SQLiteStore
from persistence.sqlite_schema import statements
from tests.support.servers import REPO


def _recorded(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


async def test_a_new_file_gets_every_migration_once(tmp_path: Path) -> None:
    known = runner.load_migrations("sqlite")
    store = await SQLiteStore(tmp_path / "a.sqlite3").open()
    await store.close()
    assert store.migrations_applied == known
    again = await SQLiteStore(tmp_path / "a.sqlite3").open()
    await again.close()
    assert again.migrations_applied == []
    assert _recorded(tmp_path / "a.sqlite3") == [(m.version, m.name) for m in known]


async def test_stores_opening_one_new_file_together_apply_each_migration_once(tmp_path: Path) -> None:
    stores = await asyncio.gather(*(SQLiteStore(tmp_path / "b.sqlite3").open() for _ in range(3)))
    for store in stores:
        await store.close()
    assert sorted(len(store.migrations_applied) for store in stores) == [0, 0, len(runner.load_migrations("sqlite"))]


async def test_an_edited_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    await (await SQLiteStore(path).open()).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(StoreError, match="0001_document_store was changed after it was applied"):
        await SQLiteStore(path).open()


async def test_without_auto_migrate_a_file_that_is_behind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="collab-server migrate"):
        await SQLiteStore(tmp_path / "d.sqlite3", auto_migrate=False).open()


def test_statements_split_a_script_without_committing_it() -> None:
    script = "-- a comment\nCREATE TABLE a (x TEXT DEFAULT ';');\n\nCREATE INDEX a_x ON a (x);\n"
    assert list(statements(script)) == ["CREATE TABLE a (x TEXT DEFAULT ';');", "CREATE INDEX a_x ON a (x);"]
    with pytest.raises(ValueError, match="incomplete"):
        list(statements("CREATE TABLE b (x"))


def test_the_migrate_command_works_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.sqlite3'}"
    run = [sys.executable, "-m", "collab_server", "migrate", "--database-url", url]
    first = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_document_store" in first.stdout
    second = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "schema is up to date" in second.stdout
