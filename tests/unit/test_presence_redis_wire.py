"""The Redis message format (presence.redis_wire): bundles, parts and their reassembly, foreign bytes."""

from __future__ import annotations

from itertools import count

import pytest

from collab_server.errors import ProtocolError
from presence.broker import Envelope, Kind
from presence.redis_wire import Reassembly, Record, client_name, decode_message, encode_messages


def test_small_envelopes_of_a_room_travel_in_one_message() -> None:
    envelopes = [Envelope("réplica", Kind.AWARENESS, b"payload", target="b"), Envelope("réplica", Kind.UPDATE, b"")]
    [message] = encode_messages("réplica", envelopes, count(1))
    assert decode_message(message) == [
        Record(Kind.AWARENESS, "réplica", "b", 0, 0, 1, b"payload"),
        Record(Kind.UPDATE, "réplica", "", 0, 0, 1, b""),
    ]


def test_bundles_stay_under_the_chunk_size() -> None:
    envelopes = [Envelope("a", Kind.UPDATE, bytes([n]) * 40) for n in range(10)]
    messages = encode_messages("a", envelopes, count(1), chunk_bytes=100)
    assert len(messages) == 5
    assert [r.payload for m in messages for r in decode_message(m)] == [e.payload for e in envelopes]


def test_a_large_envelope_is_split_and_reassembled() -> None:
    payload = bytes(range(256)) * 40
    small = Envelope("a", Kind.UPDATE, b"small")
    messages = encode_messages("a", [small, Envelope("a", Kind.SYNC_STEP2, payload), small], count(7), 1000)
    assert len(messages) == 1 + 11 + 1
    assembly = Reassembly()
    records = [record for message in messages for record in decode_message(message)]
    results = [assembly.add(b"ch", record) for record in records[1:-1]]
    assert all(envelope is None for envelope, _ in results[:-1])
    assert results[-1] == (Envelope("a", Kind.SYNC_STEP2, payload), [])
    assert records[0].payload == records[-1].payload == b"small"


def test_a_repeated_part_loses_the_envelope_and_names_its_channel() -> None:
    messages = encode_messages("a", [Envelope("a", Kind.UPDATE, b"x" * 30)], count(1), chunk_bytes=10)
    [first] = decode_message(messages[0])
    assembly = Reassembly()
    assembly.add(b"ch", first)
    assert assembly.add(b"ch", first) == (None, [b"ch"])


@pytest.mark.parametrize(
    "data", [b"", b"\x02\x01a", b"\x01\x05ab", b"\x01\x01a", b"\x01\x01a\x01\x00\x00\x00\x01\x09ab"]
)
def test_foreign_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(data)


def test_client_names_are_printable_and_say_whose_they_are() -> None:
    assert client_name("blue", "pod a", "sub") == "collab:blue:pod_a:sub"
    assert client_name("blue", "", "registry") == "collab:blue:registry"
