"""Peer: the bounded send queue, and closing a slow consumer without touching anyone else."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc

from collab_server.errors import CloseCode
from collab_server.protocol import encode_update
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.fakes import make_peer, make_room, settle


async def test_a_peer_that_stops_reading_is_closed_with_a_retryable_code() -> None:
    room, _ = make_room()
    author, _ = make_peer(room)
    slow, slow_socket = make_peer(room, stalled=True, max_messages=5)
    fast, fast_socket = make_peer(room)
    client: Doc[Any] = Doc()
    for i in range(20):
        room.receive(author, encode_update(append_text(client, str(i))))
        await settle()  # one broadcast per tick
    assert slow.closed and slow.close_code == CloseCode.TRY_AGAIN_LATER
    assert slow not in room.peers
    # the stalled reader never took the close frame either, so its connection was aborted
    await eventually(lambda: _assert(slow_socket.aborted), timeout=5)
    assert not fast.closed
    assert len(fast_socket.frames) == 20


async def test_one_large_message_is_always_accepted_into_an_empty_queue() -> None:
    room, _ = make_room()
    peer, socket = make_peer(room, max_bytes=10)
    peer.send(b"x" * 1000)
    await settle()
    assert socket.frames == [b"x" * 1000]
    assert not peer.closed


def _assert(condition: bool) -> None:
    assert condition
