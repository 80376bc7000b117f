"""RoomControl: open sockets follow their room's access, even when the room event was lost."""

from __future__ import annotations

from typing import Any

from collab_server.access import Access
from collab_server.errors import CloseCode
from collab_server.peer import AsgiSocket, Peer
from collab_server.principal import Principal
from collab_server.roles import Role
from collab_server.room_control import RoomControl
from collab_server.room_tokens import RoomTokens
from collab_server.rooms import RoomManager
from collab_server.settings import Settings
from persistence.memory import MemoryStore
from persistence.room_store import RoomRecord
from persistence.room_store_memory import MemoryRoomStore
from persistence.writer import AppendWriter
from presence.room_events import LocalRoomEvents, RoomEvent
from tests.support import tokens
from tests.support.eventually import eventually


async def _sent(message: dict[str, Any]) -> None:
    pass


async def make_control(recheck: float) -> tuple[RoomControl, MemoryRoomStore]:
    rooms = MemoryRoomStore()
    await rooms.create(RoomRecord(id="r1", name="", owner="alice", visibility="private"))
    access = Access(rooms, RoomTokens(tokens.SERVER_KEY), None, mode="open")
    store = MemoryStore()
    writer = AppendWriter(store)
    control = RoomControl(
        access, RoomManager(store, writer, Settings(replica_id="t")), store, writer, LocalRoomEvents(),
        recheck_interval=recheck,
    )
    await control.start()
    return control, rooms


async def test_a_changed_event_lowers_and_removes_open_sockets() -> None:
    control, rooms = await make_control(recheck=3600)
    try:
        await rooms.set_participant("r1", "bob", Role.EDITOR, "owner")
        bob = Peer(AsgiSocket(_sent), room_name="r1")
        control.opened("r1", bob, Principal("bob"))
        await rooms.set_participant("r1", "bob", Role.VIEWER, "owner")
        await control.changed("r1")
        assert not bob.can_write and not bob.closed
        await rooms.remove_participant("r1", "bob")
        await control.changed("r1")
        assert bob.closed and bob.close_code == CloseCode.FORBIDDEN
    finally:
        await control.close()


async def test_a_lost_event_is_made_up_for_by_the_periodic_recheck() -> None:
    control, rooms = await make_control(recheck=0.05)
    try:
        await rooms.set_participant("r1", "bob", Role.EDITOR, "owner")
        bob = Peer(AsgiSocket(_sent), room_name="r1")
        control.opened("r1", bob, Principal("bob"))
        await rooms.remove_participant("r1", "bob")  # no event published: as if Redis had lost it

        def cut_off() -> None:
            assert bob.closed and bob.close_code == CloseCode.FORBIDDEN

        await eventually(cut_off, timeout=5)
    finally:
        await control.close()


async def test_a_deleted_event_closes_sockets_with_4404() -> None:
    control, _rooms = await make_control(recheck=3600)
    try:
        bob = Peer(AsgiSocket(_sent), room_name="r1")
        control.opened("r1", bob, Principal("bob"))
        await control.handle(RoomEvent("r1", "deleted"))
        assert bob.closed and bob.close_code == CloseCode.NO_SUCH_ROOM
    finally:
        await control.close()
