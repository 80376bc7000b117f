"""PostgreSQL RoomStore (``postgresql://…``), on a small asyncpg pool of its own.

The schema is the document store's (``persistence/migrations/postgres``): ``connect`` runs the same
migration runner, under the same advisory lock, so either store may open a new database first.
Driver errors are translated into StoreUnavailable; a duplicate id into Conflict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from collab_server.errors import Conflict
from collab_server.roles import Role
from collab_server.secrets import redact_url
from persistence.postgres_errors import translate_errors
from persistence.postgres_schema import prepare_schema
from persistence.room_store import GrantedBy, Participant, RoomRecord
from persistence.room_store_sql import participant_from_row, room_from_row, settings_json

T = TypeVar("T")

_ROOM = """id, name, owner, visibility, password_hash, settings::text,
    extract(epoch FROM created_at)::float8, extract(epoch FROM last_active_at)::float8, password_epoch"""
_PARTICIPANT = """room_id, principal, role, granted_by,
    extract(epoch FROM joined_at)::float8, extract(epoch FROM left_at)::float8"""
_LIST_FOR = f"""
SELECT {_ROOM} FROM rooms WHERE id > $1 AND (owner = $2 OR id IN (
    SELECT room_id FROM room_participants WHERE principal = $2 AND left_at IS NULL AND room_id > $1))
ORDER BY id LIMIT $3
"""
_UPSERT_PARTICIPANT = f"""
INSERT INTO room_participants (room_id, principal, role, granted_by) VALUES ($1, $2, $3, $4)
ON CONFLICT (room_id, principal) DO UPDATE SET role = excluded.role, granted_by = excluded.granted_by,
    joined_at = CASE WHEN room_participants.left_at IS NULL THEN room_participants.joined_at ELSE now() END,
    left_at = NULL
RETURNING {_PARTICIPANT}
"""


class PostgresRoomStore:
    """RoomStore on PostgreSQL. Open it with :meth:`connect`."""

    def __init__(self, pool: asyncpg.Pool, *, url: str, timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"PostgresRoomStore({redact_url(self._url)!r})"

    def describe(self) -> str:
        return f"postgresql {redact_url(self._url)} (pool of up to {self._pool.get_max_size()} connections)"

    @classmethod
    async def connect(
        cls, url: str, *, pool_size: int = 4, timeout: float = 10.0, auto_migrate: bool = True
    ) -> PostgresRoomStore:
        await prepare_schema(url, timeout=timeout, auto_migrate=auto_migrate)
        async with translate_errors("connect"):
            pool = await asyncpg.create_pool(
                url, min_size=0, max_size=pool_size, timeout=timeout, command_timeout=timeout,
                server_settings={"application_name": "collab-server-rooms"},
            )
        return cls(pool, url=url, timeout=timeout)

    async def _with(self, operation: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with translate_errors(operation):
            try:
                async with self._pool.acquire(timeout=self._timeout) as conn:
                    return await work(conn)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"room exists already ({exc})") from exc

    async def create(self, room: RoomRecord) -> None:
        async def insert(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO rooms (id, name, owner, visibility, password_hash, settings, password_epoch)"
                    " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
                    room.id, room.name, room.owner, room.visibility, room.password_hash, settings_json(room),
                    room.password_epoch,
                )
                await conn.execute(
                    "INSERT INTO room_participants (room_id, principal, role, granted_by)"
                    " VALUES ($1, $2, 'owner', 'owner')",
                    room.id, room.owner,
                )

        await self._with("create room", insert)

    async def get(self, room_id: str) -> RoomRecord | None:
        async def read(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow(f"SELECT {_ROOM} FROM rooms WHERE id = $1", room_id)

        row = await self._with("get room", read)
        return None if row is None else room_from_row(tuple(row))

    async def update(self, room: RoomRecord) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE rooms SET name = $2, owner = $3, visibility = $4, password_hash = $5,"
                " settings = $6::jsonb, password_epoch = $7, last_active_at = now() WHERE id = $1",
                room.id, room.name, room.owner, room.visibility, room.password_hash, settings_json(room),
                room.password_epoch,
            )

        await self._with("update room", write)

    async def delete(self, room_id: str) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            # room_participants go with it (ON DELETE CASCADE)
            status: str = await conn.execute("DELETE FROM rooms WHERE id = $1", room_id)
            return status != "DELETE 0"

        return await self._with("delete room", delete)

    async def list_for(self, user: str | None, *, limit: int, after: str | None = None) -> list[RoomRecord]:
        async def read(conn: asyncpg.Connection) -> list[Any]:
            if user is None:
                query = f"SELECT {_ROOM} FROM rooms WHERE id > $1 ORDER BY id LIMIT $2"
                return list(await conn.fetch(query, after or "", limit))
            return list(await conn.fetch(_LIST_FOR, after or "", user, limit))

        return [room_from_row(tuple(row)) for row in await self._with("list rooms", read)]

    async def participant(self, room_id: str, user: str) -> Participant | None:
        async def read(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow(
                f"SELECT {_PARTICIPANT} FROM room_participants WHERE room_id = $1 AND principal = $2", room_id, user
            )

        row = await self._with("get participant", read)
        return None if row is None else participant_from_row(tuple(row))

    async def participants(self, room_id: str) -> list[Participant]:
        async def read(conn: asyncpg.Connection) -> list[Any]:
            return list(
                await conn.fetch(
                    f"SELECT {_PARTICIPANT} FROM room_participants WHERE room_id = $1 AND left_at IS NULL"
                    " ORDER BY principal",
                    room_id,
                )
            )

        return [participant_from_row(tuple(row)) for row in await self._with("list participants", read)]

    async def set_participant(self, room_id: str, user: str, role: Role, granted_by: GrantedBy) -> Participant:
        async def write(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow(_UPSERT_PARTICIPANT, room_id, user, role.value, granted_by)

        return participant_from_row(tuple(await self._with("set participant", write)))

    async def remove_participant(self, room_id: str, user: str) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            status: str = await conn.execute(
                "UPDATE room_participants SET left_at = now() WHERE room_id = $1 AND principal = $2"
                " AND left_at IS NULL",
                room_id, user,
            )
            return status != "UPDATE 0"

        return await self._with("remove participant", write)

    async def remove_granted_by(self, room_id: str, granted_by: GrantedBy) -> list[str]:
        async def write(conn: asyncpg.Connection) -> list[Any]:
            return list(
                await conn.fetch(
                    "UPDATE room_participants SET left_at = now() WHERE room_id = $1 AND granted_by = $2"
                    " AND left_at IS NULL RETURNING principal",
                    room_id, granted_by,
                )
            )

        return sorted(row[0] for row in await self._with("remove participants", write))

    async def close(self) -> None:
        await self._pool.close()


