"""Room: sync replies, batched broadcasts, the origin rule and awareness bookkeeping."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from collab_server import outbox
from collab_server.errors import ProtocolError, StoreOverloaded
from collab_server.origins import LOCAL, Replica
from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    SyncStep2,
    SyncUpdate,
    decode_awareness,
    encode_awareness_message,
    encode_sync_step1,
    encode_update,
)
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.fakes import RecordingSocket, doc_of, make_peer, make_room, settle


def _text_of(updates: list[bytes]) -> str:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


async def test_welcome_is_step1_then_awareness() -> None:
    room, _ = make_room()
    writer, _ = make_peer(room)
    room.receive(writer, encode_awareness_message([AwarenessEntry(1, 1, '{"user":"a"}')]))
    messages = room.welcome()
    assert messages[0] == encode_sync_step1(doc_of(room).get_state())
    assert decode_awareness(messages[1][2:]) == [AwarenessEntry(1, 1, '{"user":"a"}')]


async def test_step1_is_answered_with_the_missing_part() -> None:
    room, _ = make_room()
    author, _ = make_peer(room)
    client: Doc[Any] = Doc()
    room.receive(author, encode_update(append_text(client, "abc")))
    reader, socket = make_peer(room)
    room.receive(reader, encode_sync_step1(b"\x00"))
    await settle()
    [reply] = [m for m in socket.messages() if isinstance(m, SyncStep2)]
    assert _text_of([reply.update]) == "abc"


async def test_an_update_goes_to_every_other_peer_but_not_back() -> None:
    room, sink = make_room()
    author, author_socket = make_peer(room)
    _, other_socket = make_peer(room)
    _, third_socket = make_peer(room)
    client: Doc[Any] = Doc()
    room.receive(author, encode_update(append_text(client, "hi")))
    await settle()
    assert author_socket.frames == []
    for socket in (other_socket, third_socket):
        [message] = socket.messages()
        assert isinstance(message, SyncUpdate) and _text_of([message.update]) == "hi"
    # encoded once: every reader got the very same bytes object
    assert other_socket.frames[0] is third_socket.frames[0]
    assert len(sink.updates) == 1


async def test_a_broadcast_is_framed_once_for_all_its_peers() -> None:
    room, _ = make_room()
    author, _ = make_peer(room, writable=True)
    readers = [make_peer(room, writable=True)[1] for _ in range(3)]
    room.receive(author, encode_update(append_text(Doc(), "hi")))
    await settle()
    [frame] = readers[0].written_frames
    assert all(socket.written_frames == [frame] and socket.written_frames[0] is frame for socket in readers)
    [message] = readers[0].frames
    assert frame == bytes((0x82, len(message))) + message  # RFC 6455: FIN + binary, unmasked, its length


async def test_a_large_broadcast_is_not_copied_into_a_frame() -> None:
    room, _ = make_room()
    author, _ = make_peer(room, writable=True)
    readers = [make_peer(room, writable=True)[1] for _ in range(2)]
    room.receive(author, encode_update(append_text(Doc(), "A" * 100_000)))
    await settle()
    assert [socket.written_frames for socket in readers] == [[None], [None]]
    assert readers[0].frames[0] is readers[1].frames[0]  # the payload itself, shared


async def test_updates_arriving_while_a_broadcast_is_written_wait_for_it_and_go_out_merged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "SLICE", 0.0)  # a slice of 32 peers a turn, however fast they are written
    room, _ = make_room()
    author, _ = make_peer(room)
    readers = [make_peer(room)[1] for _ in range(640)]  # 20 turns of writing for each broadcast
    client: Doc[Any] = Doc()
    room.receive(author, encode_update(append_text(client, "a")))
    for _ in range(100):  # turn by turn, until the first slice is written
        if any(socket.frames for socket in readers):
            break
        await asyncio.sleep(0)
    assert not all(socket.frames for socket in readers)  # the other readers' writes wait for coming turns
    room.receive(author, encode_update(append_text(client, "b")))
    await asyncio.sleep(0)
    room.receive(author, encode_update(append_text(client, "c")))
    await eventually(lambda: _have_two_messages(readers))
    for socket in readers:
        first, second = socket.messages()
        assert isinstance(first, SyncUpdate) and isinstance(second, SyncUpdate)
        assert _text_of([first.update]) == "a"
        assert _text_of([first.update, second.update]) == "abc"  # b and c in one message, after a


def _have_two_messages(sockets: list[RecordingSocket]) -> None:
    assert all(len(socket.frames) == 2 for socket in sockets)


async def test_a_room_let_go_is_freed_at_once_not_by_the_cyclic_collector() -> None:
    room, _ = make_room()
    peer, _ = make_peer(room)
    room.receive(peer, encode_update(append_text(Doc(), "hi")))
    await settle()
    room.remove(peer)  # its last peer left: the room is unloaded and let go
    gone = weakref.ref(room)
    collecting = gc.isenabled()
    gc.disable()
    try:
        del room, peer
        assert gone() is None  # no reference cycle keeps it (its outbox holds it weakly)
    finally:
        if collecting:
            gc.enable()


async def test_updates_within_one_tick_are_merged_into_one_message() -> None:
    room, _ = make_room()
    author, _ = make_peer(room)
    _, reader_socket = make_peer(room)
    client: Doc[Any] = Doc()
    for i in range(10):
        room.receive(author, encode_update(append_text(client, str(i))))
    await settle()
    [message] = reader_socket.messages()
    assert isinstance(message, SyncUpdate)
    assert _text_of([message.update]) == "0123456789"


async def test_two_senders_in_one_tick_each_get_only_the_other() -> None:
    room, _ = make_room()
    a, a_socket = make_peer(room)
    b, b_socket = make_peer(room)
    _, c_socket = make_peer(room)
    doc_a: Doc[Any] = Doc(client_id=1)
    doc_b: Doc[Any] = Doc(client_id=2)
    room.receive(a, encode_update(append_text(doc_a, "A")))
    room.receive(b, encode_update(append_text(doc_b, "B")))
    await settle()
    [to_a] = a_socket.messages()
    [to_b] = b_socket.messages()
    [to_c] = c_socket.messages()
    assert isinstance(to_a, SyncUpdate) and _text_of([to_a.update]) == "B"
    assert isinstance(to_b, SyncUpdate) and _text_of([to_b.update]) == "A"
    assert isinstance(to_c, SyncUpdate) and sorted(_text_of([to_c.update])) == ["A", "B"]


async def test_large_updates_in_one_tick_are_sent_as_they_are_not_merged() -> None:
    room, _ = make_room()
    a, a_socket = make_peer(room)
    b, b_socket = make_peer(room)
    _, c_socket = make_peer(room)
    big_a = append_text(Doc(client_id=1), "A" * 200_000)
    big_b = append_text(Doc(client_id=2), "B" * 200_000)
    room.receive(a, encode_update(big_a))
    room.receive(b, encode_update(big_b))
    await settle()
    [to_a] = a_socket.messages()
    [to_b] = b_socket.messages()
    to_c = c_socket.messages()
    assert isinstance(to_a, SyncUpdate) and _text_of([to_a.update]) == "B" * 200_000
    assert isinstance(to_b, SyncUpdate) and _text_of([to_b.update]) == "A" * 200_000
    assert len(to_c) == 2  # two messages: 400 KB is past the merge limit
    assert sorted(_text_of([m.update]) for m in to_c if isinstance(m, SyncUpdate)) == ["A" * 200_000, "B" * 200_000]


async def test_replica_updates_are_shown_but_never_stored_or_published() -> None:
    room, sink = make_room()
    _, socket = make_peer(room)
    room.apply(append_text(Doc(), "remote"), Replica("other"))
    await settle()
    [message] = socket.messages()
    assert isinstance(message, SyncUpdate) and _text_of([message.update]) == "remote"
    assert sink.updates == []
    assert room.log_updates == 0


async def test_server_side_changes_are_stored() -> None:
    room, sink = make_room()
    room.apply(append_text(Doc(), "from the server"), LOCAL)
    await settle()
    assert len(sink.updates) == 1
    assert room.log_updates == 1


async def test_a_duplicate_update_is_not_stored_or_broadcast_twice() -> None:
    room, sink = make_room()
    author, _ = make_peer(room)
    _, socket = make_peer(room)
    update = append_text(Doc(), "once")
    room.receive(author, encode_update(update))
    room.receive(author, encode_update(update))
    await settle()
    assert len(sink.updates) == 1
    assert len(socket.frames) == 1


async def test_read_only_peers_cannot_change_the_document() -> None:
    room, sink = make_room()
    viewer, _ = make_peer(room, can_write=False)
    room.receive(viewer, encode_update(append_text(Doc(), "nope")))
    assert str(doc_of(room).get("t", type=Text)) == ""
    assert sink.updates == []


async def test_a_full_store_refuses_the_edit_before_applying_it() -> None:
    room, sink = make_room()
    sink.accepting = False
    author, _ = make_peer(room)
    with pytest.raises(StoreOverloaded):
        room.receive(author, encode_update(append_text(Doc(), "lost?")))
    assert str(doc_of(room).get("t", type=Text)) == ""


async def test_an_undecodable_update_is_refused_closes_its_sender_and_changes_nothing() -> None:
    room, sink = make_room()
    author, socket = make_peer(room)
    _, other = make_peer(room)
    client: Doc[Any] = Doc()
    client.get("m", type=Map)["k"] = "v"
    room.apply(client.get_update(), LOCAL)
    room.receive(author, encode_update(b"\x01\x05garbage"))
    await settle()
    assert author.closed and socket.closes == [(4400, "protocol error: update cannot be decoded")]
    assert doc_of(room).get("m", type=Map).to_py() == {"k": "v"}
    assert len(sink.updates) == 1 and len(other.frames) == 1  # the good update only


async def test_a_malformed_state_vector_is_a_protocol_error() -> None:
    room, _ = make_room()
    author, _ = make_peer(room)
    with pytest.raises(ProtocolError):
        room.receive(author, encode_sync_step1(b"\x05\x01"))


async def test_awareness_reaches_everyone_including_the_sender() -> None:
    room, sink = make_room()
    author, author_socket = make_peer(room)
    _, other_socket = make_peer(room)
    message = encode_awareness_message([AwarenessEntry(42, 1, json.dumps({"cursor": 3}))])
    room.receive(author, message)
    await settle()
    assert author_socket.frames == [message]
    assert other_socket.frames == [message]
    assert author.client_ids == (42,)
    assert sink.awareness == [message]


async def test_awareness_of_one_tick_reaches_each_peer_as_one_message() -> None:
    # 20 providers announcing themselves together: 20 messages per peer would be 400 sends; it is 20.
    room, sink = make_room()
    peers = [make_peer(room) for _ in range(20)]
    for i, (peer, _) in enumerate(peers):
        room.receive(peer, encode_awareness_message([AwarenessEntry(100 + i, 1, json.dumps({"n": i}))]))
    room.receive(peers[0][0], encode_awareness_message([AwarenessEntry(100, 2, json.dumps({"n": "moved"}))]))
    await settle()
    for _, socket in peers:
        [message] = socket.messages()
        assert isinstance(message, AwarenessMessage)
        entries = {entry.client_id: entry for entry in decode_awareness(message.update)}
        assert set(entries) == {100 + i for i in range(20)}
        assert entries[100].clock == 2 and json.loads(entries[100].state) == {"n": "moved"}  # the newest
    assert len(sink.awareness) == 21  # other replicas still get every message


async def test_awareness_arriving_while_a_broadcast_is_written_waits_for_it_newest_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "SLICE", 0.0)  # a slice of 32 peers a turn
    room, _ = make_room()
    author, _ = make_peer(room)
    readers = [make_peer(room)[1] for _ in range(640)]  # 20 turns of writing for each broadcast
    room.receive(author, encode_update(append_text(Doc(), "a")))
    for _ in range(100):  # turn by turn, until the first slice is written
        if any(socket.frames for socket in readers):
            break
        await asyncio.sleep(0)
    for clock in (1, 2, 3):  # a cursor moving, one relay a turn
        room.receive(author, encode_awareness_message([AwarenessEntry(7, clock, json.dumps({"x": clock}))]))
        await asyncio.sleep(0)
    await eventually(lambda: _have_two_messages(readers))
    for socket in readers:
        update, awareness = socket.messages()
        assert isinstance(update, SyncUpdate) and isinstance(awareness, AwarenessMessage)
        assert [entry.clock for entry in decode_awareness(awareness.update)] == [3]  # the newest, once


async def test_closing_a_peer_removes_its_awareness_for_the_others() -> None:
    room, sink = make_room()
    leaving, _ = make_peer(room)
    _, staying_socket = make_peer(room)
    entries = [AwarenessEntry(42, 4, '{"u":1}'), AwarenessEntry(43, 1, '{"u":2}')]
    room.receive(leaving, encode_awareness_message(entries))
    await settle()
    staying_socket.frames.clear()
    room.remove(leaving)
    await settle()
    [message] = staying_socket.messages()
    assert isinstance(message, AwarenessMessage)
    removals = decode_awareness(message.update)
    assert sorted((e.client_id, e.clock, e.state) for e in removals) == [(42, 5, "null"), (43, 2, "null")]
    assert len(room.awareness) == 0
    assert sink.awareness[-1] == message.message


async def test_a_stale_awareness_update_does_not_resurrect_a_removed_client() -> None:
    room, _ = make_room()
    peer, _ = make_peer(room)
    room.receive(peer, encode_awareness_message([AwarenessEntry(9, 2, '{"x":1}')]))
    room.remove(peer)
    other, _ = make_peer(room)
    room.receive(other, encode_awareness_message([AwarenessEntry(9, 2, '{"x":1}')]))
    assert len(room.awareness) == 0
