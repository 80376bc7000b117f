"""The RoomStore contract: one body per behaviour, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from collab_server.errors import Conflict
from collab_server.roles import Role
from persistence.room_store import RoomRecord, RoomStore
from persistence.room_store_memory import MemoryRoomStore
from persistence.room_store_sqlite import SQLiteRoomStore


async def _postgres(url: str) -> RoomStore:
    from persistence.room_store_postgres import PostgresRoomStore

    store = await PostgresRoomStore.connect(url, pool_size=2)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE rooms, room_participants")
    finally:
        await conn.close()
    return store

@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def rooms(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RoomStore]:
    opened: RoomStore
    if request.param == "memory":
        opened = MemoryRoomStore()
    elif request.param == "sqlite":
        opened = await SQLiteRoomStore(tmp_path / "rooms.sqlite3").open()
    else:
        opened = await _postgres(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        await opened.close()

def new_room(owner: str = "alice", **fields: object) -> RoomRecord:
    return RoomRecord(id=uuid.uuid4().hex[:16], name="board", owner=owner, **fields)  # type: ignore[arg-type]

async def test_a_created_room_reads_back_with_its_owner_as_participant(rooms: RoomStore) -> None:
    room = new_room(visibility="private", password_hash="$2b$hash", settings={"default_role": "viewer"})
    await rooms.create(room)
    stored = await rooms.get(room.id)
    assert stored is not None
    assert (stored.name, stored.owner, stored.visibility, stored.password_hash, stored.settings) == (
        "board", "alice", "private", "$2b$hash", {"default_role": "viewer"}
    )
    assert stored.created_at > 0 and stored.password_epoch == 0
    [owner] = await rooms.participants(room.id)
    assert (owner.user, owner.role, owner.granted_by, owner.active) == ("alice", Role.OWNER, "owner", True)
    assert await rooms.get("no-such-room") is None

async def test_creating_an_existing_id_is_a_conflict(rooms: RoomStore) -> None:
    room = new_room()
    await rooms.create(room)
    with pytest.raises(Conflict):
        await rooms.create(room)

async def test_update_replaces_fields_and_keeps_created_at(rooms: RoomStore) -> None:
    room = new_room()
    await rooms.create(room)
    stored = await rooms.get(room.id)
    assert stored is not None
    changed = RoomRecord(
        id=room.id, name="renamed", owner="alice", visibility="private", password_hash=None,
        settings={"a": 1}, created_at=0.0, password_epoch=3,
    )
    await rooms.update(changed)
    again = await rooms.get(room.id)
    assert again is not None
    assert (again.name, again.visibility, again.settings, again.password_epoch) == ("renamed", "private", {"a": 1}, 3)
    assert again.created_at == pytest.approx(stored.created_at, abs=1e-3)

async def test_participants_are_added_changed_removed_and_added_again(rooms: RoomStore) -> None:
    room = new_room()
    await rooms.create(room)
    added = await rooms.set_participant(room.id, "bob", Role.EDITOR, "invite")
    assert (added.role, added.granted_by, added.active) == (Role.EDITOR, "invite", True)
    lowered = await rooms.set_participant(room.id, "bob", Role.VIEWER, "owner")
    assert lowered.role == Role.VIEWER and lowered.joined_at == pytest.approx(added.joined_at, abs=1e-3)
    assert [p.user for p in await rooms.participants(room.id)] == ["alice", "bob"]

    assert await rooms.remove_participant(room.id, "bob") is True
    assert await rooms.remove_participant(room.id, "bob") is False
    removed = await rooms.participant(room.id, "bob")
    assert removed is not None and not removed.active and removed.left_at is not None
    assert [p.user for p in await rooms.participants(room.id)] == ["alice"]

    back = await rooms.set_participant(room.id, "bob", Role.EDITOR, "password")
    assert back.active and back.role == Role.EDITOR
    assert await rooms.participant(room.id, "carol") is None

async def test_remove_granted_by_removes_only_that_kind(rooms: RoomStore) -> None:
    room = new_room()
    await rooms.create(room)
    await rooms.set_participant(room.id, "p1", Role.EDITOR, "password")
    await rooms.set_participant(room.id, "p2", Role.VIEWER, "password")
    await rooms.set_participant(room.id, "i1", Role.EDITOR, "invite")
    assert await rooms.remove_granted_by(room.id, "password") == ["p1", "p2"]
    assert [p.user for p in await rooms.participants(room.id)] == ["alice", "i1"]

async def test_list_for_pages_through_owned_and_joined_rooms_in_id_order(rooms: RoomStore) -> None:
    owned = [new_room("alice") for _ in range(3)]
    joined, left, other = new_room("bob"), new_room("bob"), new_room("bob")
    for room in [*owned, joined, left, other]:
        await rooms.create(room)
    await rooms.set_participant(joined.id, "alice", Role.VIEWER, "invite")
    await rooms.set_participant(left.id, "alice", Role.VIEWER, "invite")
    await rooms.remove_participant(left.id, "alice")
    expected = sorted(r.id for r in [*owned, joined])

    first = await rooms.list_for("alice", limit=2)
    rest = await rooms.list_for("alice", limit=10, after=first[-1].id)
    assert [r.id for r in first + rest] == expected
    everything = await rooms.list_for(None, limit=100)
    assert {r.id for r in everything} >= {r.id for r in [*owned, joined, left, other]}

async def test_delete_removes_the_room_and_its_participants(rooms: RoomStore) -> None:
    room = new_room()
    await rooms.create(room)
    await rooms.set_participant(room.id, "bob", Role.EDITOR, "owner")
    assert await rooms.delete(room.id) is True
    assert await rooms.get(room.id) is None
    assert await rooms.participants(room.id) == []
    assert await rooms.participant(room.id, "bob") is None
    assert await rooms.delete(room.id) is False

Opener = Callable[[], Awaitable[RoomStore]]
