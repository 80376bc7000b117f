"""This replica's own awareness clients (presence.tracker)."""

from __future__ import annotations

from collab_server.peer import Peer
from collab_server.protocol import AwarenessEntry, encode_awareness_message
from presence.local import LocalRegistry
from presence.tracker import PresenceTracker, own_entries
from tests.unit.fakes import RecordingSocket, make_room


async def test_a_relayed_awareness_state_is_not_counted_as_ours() -> None:
    # y-websocket clients echo every awareness change they see, other clients' included.
    room, _ = make_room()
    socket = RecordingSocket()
    peer = Peer(socket, room_name=room.name)
    room.add(peer)
    tracker = PresenceTracker(LocalRegistry(), "me")
    own, relayed = AwarenessEntry(1, 1, '{"a":1}'), AwarenessEntry(2, 4, '{"b":2}')
    room.apply_awareness(encode_awareness_message([own])[2:], encode_awareness_message([own]), peer)
    assert own_entries(room, [own, relayed], tracker) == [own]
    tracker.observe(room.name, [own])
    removal = AwarenessEntry(1, 2, "null")
    assert own_entries(room, [removal, AwarenessEntry(2, 5, "null")], tracker) == [removal]
