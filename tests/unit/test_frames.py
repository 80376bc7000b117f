"""The frame gate: replies bounded per frame, rates charged, room-level quotas checked per message."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Text

from collab_server.errors import DocumentTooLarge, ProtocolError, RateExceeded, RoomOverloaded
from collab_server.frames import MAX_STEP1_PER_FRAME, FrameGate
from collab_server.limits import DocumentSizes, PeerRates
from collab_server.origins import LOCAL
from collab_server.protocol import (
    AwarenessEntry,
    FrameLimits,
    QueryAwareness,
    SyncStep1,
    encode_awareness_message,
    encode_query_awareness,
    encode_sync_step1,
    encode_update,
)
from tests.unit.fakes import make_peer, make_room, settle


def _gate(**overrides: Any) -> FrameGate:
    rates = overrides.pop("rates", PeerRates(1e9, 1e9, 1e9, 1e9))
    sizes = overrides.pop("sizes", DocumentSizes(1 << 30, _nothing))
    return FrameGate(FrameLimits(messages=10_000), rates, sizes, overrides.pop("max_awareness_states", 100))


def _nothing(room: Any) -> int:
    return 0


def _text_update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


async def test_5000_identical_step1s_are_answered_once() -> None:
    room, _ = make_room()
    room.apply(_text_update("x" * 100_000), LOCAL)
    await settle()
    peer, socket = make_peer(room)
    gate = _gate()
    messages = gate.admit(encode_sync_step1(b"\x00") * 5000)
    assert messages == [SyncStep1(b"\x00")]
    for message in messages:
        room.handle(peer, message)
    await settle()
    step2s = [frame for frame in socket.frames if frame[:2] == b"\x00\x01"]
    assert len(step2s) == 1
    assert len(step2s[0]) > 100_000


def test_more_than_a_few_different_step1s_in_one_frame_are_refused() -> None:
    frame = b"".join(encode_sync_step1(bytes([1, client, 1])) for client in range(1, MAX_STEP1_PER_FRAME + 2))
    with pytest.raises(ProtocolError, match="different sync step1s"):
        _gate().admit(frame)


def test_query_awareness_is_answered_once_per_frame() -> None:
    assert _gate().admit(encode_query_awareness() * 5000) == [QueryAwareness()]


def test_rates_are_charged_per_frame_and_per_message() -> None:
    gate = _gate(rates=PeerRates(1, 100, 1, 10, patience=5))
    assert gate.admit(encode_query_awareness() * 10) and gate.pause() == 0
    gate.admit(encode_query_awareness() * 3)  # 3 messages past the burst at 1 per second
    assert 2.9 < gate.pause() <= 3.0  # slowed first
    gate.admit(encode_query_awareness() * 3)
    with pytest.raises(RateExceeded, match="messages per second"):
        gate.pause()  # 6 s of slowing at once: past its patience
    gate = _gate(rates=PeerRates(1, 100, 1, 10_000, patience=5))
    gate.admit(encode_query_awareness() * 200)  # 100 bytes past the burst at 1 per second
    with pytest.raises(RateExceeded, match="bytes per second"):
        gate.pause()


def test_awareness_past_the_room_limit_is_refused() -> None:
    room, _ = make_room()
    room.awareness.apply([AwarenessEntry(i, 1, "{}") for i in range(3)])
    gate = _gate(max_awareness_states=4)
    [fits] = gate.admit(encode_awareness_message([AwarenessEntry(10, 1, "{}")]))
    gate.check(fits, room)
    [too_many] = gate.admit(encode_awareness_message([AwarenessEntry(10, 1, "{}"), AwarenessEntry(11, 1, "{}")]))
    with pytest.raises(RoomOverloaded, match="already holds 4 awareness states"):
        gate.check(too_many, room)


def test_an_update_past_the_document_quota_is_refused() -> None:
    room, _ = make_room()
    gate = _gate(sizes=DocumentSizes(1000, _nothing))
    [small] = gate.admit(encode_update(_text_update("a" * 100)))
    gate.check(small, room)
    [big] = gate.admit(encode_update(_text_update("b" * 1000)))
    with pytest.raises(DocumentTooLarge, match="past its limit of 1000 bytes"):
        gate.check(big, room)
    # A viewer's updates are dropped by the room anyway: they never count against the quota.
    gate.check(big, room, can_write=False)


async def test_awareness_is_decoded_once_for_the_gate_and_the_room() -> None:
    room, _ = make_room()
    peer, _socket = make_peer(room)
    gate = _gate()
    [message] = gate.admit(encode_awareness_message([AwarenessEntry(5, 1, '{"user": "ada"}')]))
    gate.check(message, room)
    room.handle(peer, message)
    assert room.awareness.state(5) == '{"user": "ada"}'
    assert peer.client_ids == (5,)


def test_one_connection_may_bring_only_a_few_awareness_clients() -> None:
    room, _ = make_room()
    room.awareness.apply([AwarenessEntry(i, 1, "{}") for i in range(100, 110)])
    gate = FrameGate(FrameLimits(), PeerRates(1e9, 1e9, 1e9, 1e9), DocumentSizes(1 << 30, _nothing), 1000, 3)
    # Echoes of states already live in the room (y-websocket clients relay what they see) do not count.
    [echo] = gate.admit(encode_awareness_message([AwarenessEntry(i, 1, "{}") for i in range(100, 110)]))
    gate.check(echo, room, introduced={1})
    [two_more] = gate.admit(encode_awareness_message([AwarenessEntry(2, 1, "{}"), AwarenessEntry(3, 1, "{}")]))
    gate.check(two_more, room, introduced={1})
    with pytest.raises(ProtocolError, match="at most 3 awareness clients"):
        gate.check(two_more, room, introduced={1, 4})
