"""SQLite DocumentStore: the embedded default, one file, no server.

sqlite3 blocks, so every statement runs on one dedicated thread (SQLite serialises writers anyway);
the event loop only awaits. WAL mode lets loads read while a group commit writes. ``synchronous=NORMAL``
in WAL mode survives a crash of this process (the case the server must handle); a power cut may lose
the last commits, which clients re-send on their next sync.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

from collab_server.errors import StoreUnavailable
from persistence import migrate as migrations
from persistence.base import Fold, Folded, PoisonRow, QuarantinedRow, StoredDocument, Version, poison_rows
from persistence.sqlite_schema import SQLiteSchema

T = TypeVar("T")
_COMPACT_ATTEMPTS = 5

def _switch_to_wal(conn: sqlite3.Connection, patience: float = 5.0) -> None:
    """Put the file in WAL mode. Another connection opening the same new file (a second process,
    ``collab-server migrate``) can hold a lock for a moment, and SQLite answers this pragma with "database
    is locked" at once instead of waiting on busy_timeout: so wait here, briefly and bounded."""
    deadline = time.monotonic() + patience
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class SQLiteStore:
    """DocumentStore on a SQLite file (``sqlite:///path``)."""

    def __init__(
        self, path: str | Path, *, keep_versions: int = 10, max_version_age: float = 0.0, auto_migrate: bool = True
    ) -> None:
        self.path = Path(path)
        self._keep_versions = keep_versions
        self._max_version_age = max_version_age
        self._auto_migrate = auto_migrate
        self.migrations_applied: list[migrations.Migration] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore(path={str(self.path)!r})"

    def describe(self) -> str:
        return f"sqlite file {self.path.resolve()}"

    async def open(self) -> SQLiteStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            # The runner's coroutines never await on SQLite: run them here, on the database thread.
            schema, known = SQLiteSchema(conn), migrations.load_migrations("sqlite")
            if self._auto_migrate:
                self.migrations_applied = asyncio.run(migrations.migrate(schema, known))
            else:
                asyncio.run(migrations.require_current(schema, known))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("sqlite store is not open")
        return self._conn

    async def load(self, room: str) -> StoredDocument | None:
        return await self._run(lambda: self._load(room))

    def _load(self, room: str) -> StoredDocument | None:
        db = self._db
        row = db.execute(
            "SELECT version, snapshot FROM room_snapshots WHERE room = ? ORDER BY version DESC LIMIT 1", (room,)
        ).fetchone()
        log = db.execute('SELECT seq, "update" FROM room_updates WHERE room = ? ORDER BY seq', (room,)).fetchall()
        if row is None and not log:
            return None
        return StoredDocument(
            bytes(row[1]) if row else None,
            [bytes(update) for _, update in log],
            row[0] if row else None,
            [seq for seq, _ in log],
        )

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        rows = [(room, update, time.time()) for room, update in entries]
        await self._run(lambda: self._append_many(rows))

    def _append_many(self, rows: list[tuple[str, bytes, float]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany('INSERT INTO room_updates (room, "update", created_at) VALUES (?, ?, ?)', rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def compact(
        self, room: str, *, fold: Fold, label: str | None = None, created_by: str | None = None
    ) -> Version | None:
        # Read, fold (in the CRDT engine, awaited on the event loop), then write what the fold holds, in one
        # transaction that deletes exactly the rows folded (by seq): rows appended meanwhile stay in the
        # log. If another compaction wrote a version in between, ours would lack what it folded and
        # deleted: start over from its version (optimistic, since the fold cannot hold the write lock).
        for _ in range(_COMPACT_ATTEMPTS):
            stored = await self.load(room)
            if stored is None:
                return None
            result = await fold(room, stored.snapshot, stored.updates)
            version = await self._run(partial(self._write_compaction, room, stored, result, label, created_by))
            if version is not None:
                return version
        raise StoreUnavailable(f"room {room!r}: compaction kept racing other compactions")

    def _write_compaction(
        self, room: str, stored: StoredDocument, result: Folded, label: str | None, created_by: str | None
    ) -> Version | None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            newest = db.execute("SELECT max(version) FROM room_snapshots WHERE room = ?", (room,)).fetchone()[0]
            if newest != stored.snapshot_version:
                db.execute("ROLLBACK")
                return None
            if result.bad:
                self._move_to_quarantine(room, poison_rows(result.bad, stored.snapshot_version, stored.seqs))
            version = (newest or 0) + 1
            now = time.time()
            db.execute(
                "INSERT INTO room_snapshots (room, version, snapshot, state_vector, label, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (room, version, result.snapshot, result.state_vector, label, created_by, now),
            )
            # Only rows the snapshot really holds leave the log (see collab_server.crdt.documents.fold_doc).
            db.executemany("DELETE FROM room_updates WHERE seq = ?", [(stored.seqs[i],) for i in result.folded])
            # Named versions are the user's; only unnamed ones are pruned, to the configured count and age.
            # The newest version is the room's base: never pruned.
            oldest = now - self._max_version_age if self._max_version_age > 0 else float("-inf")
            db.execute(
                "DELETE FROM room_snapshots WHERE room = ? AND label IS NULL AND version < ? AND (version NOT IN"
                " (SELECT version FROM room_snapshots WHERE room = ? AND label IS NULL"
                "  ORDER BY version DESC LIMIT ?) OR created_at < ?)",
                (room, version, room, max(self._keep_versions, 1), oldest),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Version(version, now, len(result.snapshot), label, created_by)

    # -- quarantine ----------------------------------------------------------------------------

    async def quarantine(self, room: str, rows: Sequence[PoisonRow]) -> int:
        def move() -> int:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                moved = self._move_to_quarantine(room, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return moved

        return await self._run(move)

    def _move_to_quarantine(self, room: str, rows: Sequence[PoisonRow]) -> int:
        db, moved, now = self._db, 0, time.time()
        for row in rows:
            if row.kind == "update":
                found = db.execute(
                    'SELECT "update" FROM room_updates WHERE room = ? AND seq = ?', (room, row.number)
                ).fetchone()
                db.execute("DELETE FROM room_updates WHERE room = ? AND seq = ?", (room, row.number))
            else:
                found = db.execute(
                    "SELECT snapshot FROM room_snapshots WHERE room = ? AND version = ?", (room, row.number)
                ).fetchone()
                db.execute("DELETE FROM room_snapshots WHERE room = ? AND version = ?", (room, row.number))
            if found is not None:
                db.execute(
                    "INSERT INTO room_quarantine (room, kind, number, data, reason, quarantined_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (room, row.kind, row.number, found[0], row.reason, now),
                )
                moved += 1
        return moved

    async def quarantined(self, room: str | None = None) -> list[QuarantinedRow]:
        query = "SELECT room, kind, number, data, reason, quarantined_at FROM room_quarantine"
        rows = await self._run(
            lambda: self._db.execute(query + (" WHERE room = ? ORDER BY id" if room else " ORDER BY id"),
                                     (room,) if room else ()).fetchall()
        )
        return [QuarantinedRow(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    async def room_names(self) -> list[str]:
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT room FROM room_snapshots UNION SELECT room FROM room_updates ORDER BY room"
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def versions(self, room: str) -> list[Version]:
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT version, created_at, length(snapshot), label, created_by FROM room_snapshots"
                " WHERE room = ? ORDER BY version DESC",
                (room,),
            ).fetchall()
        )
        return [Version(*row) for row in rows]

    async def read_version(self, room: str, version: int) -> bytes | None:
        row = await self._run(
            lambda: self._db.execute(
                "SELECT snapshot FROM room_snapshots WHERE room = ? AND version = ?", (room, version)
            ).fetchone()
        )
        return bytes(row[0]) if row else None

    async def delete(self, room: str) -> None:
        def delete() -> None:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM room_updates WHERE room = ?", (room,))
                db.execute("DELETE FROM room_snapshots WHERE room = ?", (room,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(delete)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
