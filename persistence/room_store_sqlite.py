"""SQLite RoomStore: rooms in the same file as the documents, on a connection and thread of its own.

Both stores run the same migration runner when they open (it is idempotent and serialised by SQLite's
write lock), so either can open a new file first.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from collab_server.errors import Conflict, StoreUnavailable
from collab_server.roles import Role
from persistence.room_store import GrantedBy, Participant, RoomRecord
from persistence.room_store_sql import (
    PARTICIPANT_COLUMNS,
    ROOM_COLUMNS,
    participant_from_row,
    room_from_row,
    settings_json,
)
from persistence.sqlite_schema import open_database, write_transaction

T = TypeVar("T")

_LIST_FOR = f"""
SELECT {ROOM_COLUMNS} FROM rooms WHERE id > ? AND (owner = ? OR id IN (
    SELECT room_id FROM room_participants WHERE principal = ? AND left_at IS NULL AND room_id > ?))
ORDER BY id LIMIT ?
"""


class SQLiteRoomStore:
    """RoomStore on a SQLite file (``sqlite:///path``)."""

    def __init__(self, path: str | Path, *, auto_migrate: bool = True) -> None:
        self.path = Path(path)
        self._auto_migrate = auto_migrate
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-rooms")
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteRoomStore(path={str(self.path)!r})"

    def describe(self) -> str:
        return f"sqlite file {self.path.resolve()}"

    async def open(self) -> SQLiteRoomStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self._conn, _ = open_database(self.path, auto_migrate=self._auto_migrate)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"room exists already ({exc})") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("sqlite room store is not open")
        return self._conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return write_transaction(self._db, work)

    async def create(self, room: RoomRecord) -> None:
        now = time.time()

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO rooms ({ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (room.id, room.name, room.owner, room.visibility, room.password_hash, settings_json(room),
                 now, now, room.password_epoch),
            )
            db.execute(
                f"INSERT INTO room_participants ({PARTICIPANT_COLUMNS}) VALUES (?, ?, 'owner', 'owner', ?, NULL)",
                (room.id, room.owner, now),
            )

        await self._run(lambda: self._transaction(insert))

    async def get(self, room_id: str) -> RoomRecord | None:
        row = await self._run(
            lambda: self._db.execute(f"SELECT {ROOM_COLUMNS} FROM rooms WHERE id = ?", (room_id,)).fetchone()
        )
        return None if row is None else room_from_row(row)

    async def update(self, room: RoomRecord) -> None:
        await self._run(
            lambda: self._db.execute(
                "UPDATE rooms SET name = ?, owner = ?, visibility = ?, password_hash = ?, settings = ?,"
                " password_epoch = ?, last_active_at = ? WHERE id = ?",
                (room.name, room.owner, room.visibility, room.password_hash, settings_json(room),
                 room.password_epoch, time.time(), room.id),
            )
        )

    async def delete(self, room_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM room_participants WHERE room_id = ?", (room_id,))
            return db.execute("DELETE FROM rooms WHERE id = ?", (room_id,)).rowcount > 0

        return await self._run(lambda: self._transaction(delete))

    async def list_for(self, user: str | None, *, limit: int, after: str | None = None) -> list[RoomRecord]:
        start = after or ""
        args: tuple[object, ...]
        if user is None:
            query, args = f"SELECT {ROOM_COLUMNS} FROM rooms WHERE id > ? ORDER BY id LIMIT ?", (start, limit)
        else:
            query, args = _LIST_FOR, (start, user, user, start, limit)
        rows = await self._run(lambda: self._db.execute(query, args).fetchall())
        return [room_from_row(row) for row in rows]

    async def participant(self, room_id: str, user: str) -> Participant | None:
        row = await self._run(
            lambda: self._db.execute(
                f"SELECT {PARTICIPANT_COLUMNS} FROM room_participants WHERE room_id = ? AND principal = ?",
                (room_id, user),
            ).fetchone()
        )
        return None if row is None else participant_from_row(row)

    async def participants(self, room_id: str) -> list[Participant]:
        rows = await self._run(
            lambda: self._db.execute(
                f"SELECT {PARTICIPANT_COLUMNS} FROM room_participants WHERE room_id = ? AND left_at IS NULL"
                " ORDER BY principal",
                (room_id,),
            ).fetchall()
        )
        return [participant_from_row(row) for row in rows]

    async def set_participant(self, room_id: str, user: str, role: Role, granted_by: GrantedBy) -> Participant:
        def upsert(db: sqlite3.Connection) -> Participant:
            db.execute(
                f"INSERT INTO room_participants ({PARTICIPANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)"
                " ON CONFLICT (room_id, principal) DO UPDATE SET role = excluded.role,"
                " granted_by = excluded.granted_by,"
                " joined_at = CASE WHEN left_at IS NULL THEN joined_at ELSE excluded.joined_at END, left_at = NULL",
                (room_id, user, role.value, granted_by, time.time()),
            )
            row = db.execute(
                f"SELECT {PARTICIPANT_COLUMNS} FROM room_participants WHERE room_id = ? AND principal = ?",
                (room_id, user),
            ).fetchone()
            return participant_from_row(row)

        return await self._run(lambda: self._transaction(upsert))

    async def remove_participant(self, room_id: str, user: str) -> bool:
        cursor = await self._run(
            lambda: self._db.execute(
                "UPDATE room_participants SET left_at = ? WHERE room_id = ? AND principal = ? AND left_at IS NULL",
                (time.time(), room_id, user),
            )
        )
        return cursor.rowcount > 0

    async def remove_granted_by(self, room_id: str, granted_by: GrantedBy) -> list[str]:
        rows = await self._run(
            lambda: self._db.execute(
                "UPDATE room_participants SET left_at = ? WHERE room_id = ? AND granted_by = ? AND left_at IS NULL"
                " RETURNING principal",
                (time.time(), room_id, granted_by),
            ).fetchall()
        )
        return sorted(row[0] for row in rows)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
