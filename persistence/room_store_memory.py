"""In-memory RoomStore: the reference implementation of the contract, for ``memory://``."""

from __future__ import annotations

import dataclasses
import time

from collab_server.errors import Conflict
from collab_server.roles import Role
from persistence.room_store import GrantedBy, Participant, RoomRecord


class MemoryRoomStore:
    """Rooms and participants in dicts; nothing survives the process."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomRecord] = {}
        self._participants: dict[str, dict[str, Participant]] = {}

    def __repr__(self) -> str:
        return f"MemoryRoomStore(rooms={len(self._rooms)})"

    def describe(self) -> str:
        return "memory (rooms are lost when the process stops)"

    async def create(self, room: RoomRecord) -> None:
        if room.id in self._rooms:
            raise Conflict(f"room {room.id!r} exists already")
        now = time.time()
        self._rooms[room.id] = dataclasses.replace(room, created_at=now, last_active_at=now)
        self._participants[room.id] = {room.owner: Participant(room.id, room.owner, Role.OWNER, "owner", now)}

    async def get(self, room_id: str) -> RoomRecord | None:
        return self._rooms.get(room_id)

    async def update(self, room: RoomRecord) -> None:
        old = self._rooms.get(room.id)
        if old is not None:
            self._rooms[room.id] = dataclasses.replace(room, created_at=old.created_at, last_active_at=time.time())

    async def delete(self, room_id: str) -> bool:
        self._participants.pop(room_id, None)
        return self._rooms.pop(room_id, None) is not None

    async def list_for(self, user: str | None, *, limit: int, after: str | None = None) -> list[RoomRecord]:
        found = []
        for room_id in sorted(self._rooms):
            if after is not None and room_id <= after:
                continue
            mine = self._participants.get(room_id, {}).get(user or "")
            if user is None or self._rooms[room_id].owner == user or (mine is not None and mine.active):
                found.append(self._rooms[room_id])
                if len(found) == limit:
                    break
        return found

    async def participant(self, room_id: str, user: str) -> Participant | None:
        return self._participants.get(room_id, {}).get(user)

    async def participants(self, room_id: str) -> list[Participant]:
        rows = self._participants.get(room_id, {})
        return [rows[user] for user in sorted(rows) if rows[user].active]

    async def set_participant(self, room_id: str, user: str, role: Role, granted_by: GrantedBy) -> Participant:
        rows = self._participants.setdefault(room_id, {})
        old = rows.get(user)
        if old is not None and old.active:
            row = dataclasses.replace(old, role=role, granted_by=granted_by)
        else:
            row = Participant(room_id, user, role, granted_by, time.time())
        rows[user] = row
        return row

    async def remove_participant(self, room_id: str, user: str) -> bool:
        rows = self._participants.get(room_id, {})
        old = rows.get(user)
        if old is None or not old.active:
            return False
        rows[user] = dataclasses.replace(old, left_at=time.time())
        return True

    async def remove_granted_by(self, room_id: str, granted_by: GrantedBy) -> list[str]:
        removed = [
            user for user, row in self._participants.get(room_id, {}).items()
            if row.active and row.granted_by == granted_by
        ]
        for user in removed:
            await self.remove_participant(room_id, user)
        return sorted(removed)

    async def close(self) -> None:
        pass
