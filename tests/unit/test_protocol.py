"""The y-websocket codec: round trips, several messages per frame, and strict refusal of bad bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pycrdt import Doc, Text
from pycrdt._sync import create_sync_step2_message, create_update_message

from collab_server.errors import ProtocolError
from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_awareness,
    decode_frame,
    encode_awareness,
    encode_awareness_message,
    encode_query_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)


def _update(text: str = "hello") -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


def test_sync_messages_round_trip() -> None:
    update = _update()
    assert decode_frame(encode_sync_step1(b"\x00")) == [SyncStep1(b"\x00")]
    assert decode_frame(encode_sync_step2(update)) == [SyncStep2(update)]
    assert decode_frame(encode_update(update)) == [SyncUpdate(update)]
    assert decode_frame(encode_query_awareness()) == [QueryAwareness()]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 1 << 21])
def test_step2_and_update_messages_are_byte_for_byte_pycrdts(size: int) -> None:
    # Ours copy the payload once; pycrdt's encoders are the reference for the bytes (varint lengths
    # change width at 128 and 16,384).
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert encode_sync_step2(payload) == create_sync_step2_message(payload)
    assert encode_update(payload) == create_update_message(payload)


def test_several_messages_in_one_frame_decode_in_order() -> None:
    update = _update()
    awareness = encode_awareness_message([AwarenessEntry(7, 1, '{"a":1}')])
    frame = encode_sync_step1(b"\x00") + encode_update(update) + awareness + encode_query_awareness()
    messages = decode_frame(frame)
    assert [type(m) for m in messages] == [SyncStep1, SyncUpdate, AwarenessMessage, QueryAwareness]
    assert isinstance(messages[2], AwarenessMessage)
    # the awareness message is relayed as received, so it must be exactly its own bytes
    assert messages[2].message == awareness


def test_a_large_payload_uses_a_multi_byte_length() -> None:
    update = _update("x" * 100_000)
    assert decode_frame(encode_update(update)) == [SyncUpdate(update)]


def test_non_ascii_awareness_round_trips_with_byte_lengths() -> None:
    # pycrdt's Encoder.write_var_string writes the character count; ours must write the byte count.
    state = json.dumps({"user": {"name": "Zoë 🦊 Ünïcødé", "color": "#ff0"}}, ensure_ascii=False)
    payload = encode_awareness([AwarenessEntry(2**40, 3, state), AwarenessEntry(5, 9, "null")])
    entries = decode_awareness(payload)
    assert entries == [AwarenessEntry(2**40, 3, state), AwarenessEntry(5, 9, "null")]
    assert json.loads(entries[0].state)["user"]["name"] == "Zoë 🦊 Ünïcødé"
    assert entries[1].removed


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"", "empty frame"),
        (b"\x80", "truncated varint in message type"),
        (b"\x00\x02\xff", "truncated varint in sync payload"),
        (b"\x00\x02\x05ab", "truncated sync payload"),
        (b"\x00\x07\x00", "unknown sync message type 7"),
        (b"\x09", "unknown message type 9"),
        (b"\x01\x0a\x01", "truncated awareness payload"),
        (b"\xff" * 9 + b"\x01", "varint too long"),
        (b"\x00\x02\x80\x80\x80\x80\x80\x80\x80\x10", "varint out of range"),
    ],
)
def test_malformed_frames_are_refused_with_a_precise_reason(frame: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_frame(frame)


def test_a_bad_message_after_a_good_one_refuses_the_whole_frame() -> None:
    frame = encode_update(_update()) + b"\x00\x02\x09"
    with pytest.raises(ProtocolError, match="truncated sync payload"):
        decode_frame(frame)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\x01\x01\x01\x03{{{", "not JSON"),
        (b"\x01\x01\x01\x02\xff\xfe", "not valid UTF-8"),
        (b"\x02\x01\x01\x02{}", "truncated varint in awareness client id"),
        (b"\x01\x01\x01\x02{}junk", "trailing bytes"),
    ],
)
def test_malformed_awareness_is_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_awareness(payload)
