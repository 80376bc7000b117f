"""What the Redis backends put on Redis: the names of keys and channels, and the pub/sub message format.

Keys and channels, all under ``prefix`` (deployments may share one Redis)::

    {prefix}:room:{room}        channel: the room's envelopes (message format below)
    {prefix}:ctl:{replica}      channel: keeps the subscriber connection in pub/sub mode, even with no room
    {prefix}:presence:{room}    hash: client id → PresenceEntry JSON; expires ``ttl`` after the last write
    {prefix}:replica:{replica}  string with a TTL: the replica's heartbeat

One pub/sub message: a header, then the records of one or more envelopes of the room::

    message := u8 version (1) · varString sender · record+
    record  := u8 kind · varString target · varUint message id · varUint part · varUint parts ·
               varUint length · payload

The envelopes one publish batch has for a room travel together in as few messages as fit ``chunk_bytes``
(under load that is one PUBLISH, one fan-out and one parse per room per batch, not per edit; a replica
drops its own messages, which Redis echoes back, by the header alone). A payload over ``chunk_bytes``
goes in parts, one message each, so that no pub/sub message approaches Redis's output-buffer limit for
subscribers (``client-output-buffer-limit pubsub 32mb``: one oversized message would get *every*
subscriber of this Redis disconnected, stalling all rooms). Parts are published in order on one
connection and put back together by :class:`Reassembly`, keyed by (sender, message id).

Decoding uses the bounds-checked ``collab_server.protocol.Reader``: a message that is not ours, or is
cut short, raises ProtocolError and is dropped whole.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from pycrdt import write_var_uint

from collab_server.errors import ProtocolError
from collab_server.protocol import Reader
from presence.broker import Envelope, Kind

WIRE_VERSION: Final = 1
DEFAULT_CHUNK_BYTES: Final = 256 * 1024
# Envelopes whose parts are still arriving are bounded, and forgotten after a while (a part lost with a
# broken connection never arrives; the Gap of the reconnect covers the loss).
_PARTIAL_MAX_BYTES: Final = 256 * 1024 * 1024
_PARTIAL_MAX_AGE: Final = 30.0


def room_channel(prefix: str, room: str) -> bytes:
    return f"{prefix}:room:".encode() + room.encode("utf-8", "surrogatepass")


def control_channel(prefix: str, replica: str) -> bytes:
    return f"{prefix}:ctl:{replica}".encode()


def presence_key(prefix: str, room: str) -> str:
    return f"{prefix}:presence:{room}"


def replica_key(prefix: str, replica: str) -> str:
    return f"{prefix}:replica:{replica}"


def client_name(prefix: str, replica: str, role: str) -> str:
    """The CLIENT SETNAME of one of our connections, so that an operator (or a test) can tell them apart
    in CLIENT LIST: ``collab:{prefix}:{replica}:{role}``, in printable ASCII without spaces."""
    name = f"collab:{prefix}:{replica}:{role}" if replica else f"collab:{prefix}:{role}"
    return "".join(c if "!" <= c <= "~" else "_" for c in name)[:120]


# -- encoding ---------------------------------------------------------------------------------------


def _var_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return write_var_uint(len(raw)) + raw


def _record(envelope: Envelope, message_id: int, part: int, parts: int, payload: bytes | memoryview) -> bytes:
    return b"".join(
        (
            bytes((envelope.kind,)),
            _var_string(envelope.target),
            write_var_uint(message_id),
            write_var_uint(part),
            write_var_uint(parts),
            write_var_uint(len(payload)),
            payload,
        )
    )


def encode_messages(
    sender: str, envelopes: Sequence[Envelope], next_id: Iterator[int], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[bytes]:
    """The pub/sub messages carrying ``envelopes`` (all for one room, in order)."""
    header = bytes((WIRE_VERSION,)) + _var_string(sender)
    messages: list[bytes] = []
    records: list[bytes] = []
    size = 0
    for envelope in envelopes:
        payload = envelope.payload
        if len(payload) > chunk_bytes:
            if records:
                messages.append(header + b"".join(records))
                records, size = [], 0
            message_id = next(next_id)
            parts = math.ceil(len(payload) / chunk_bytes)
            view = memoryview(payload)
            for index in range(parts):
                chunk = view[index * chunk_bytes : (index + 1) * chunk_bytes]
                messages.append(header + _record(envelope, message_id, index, parts, chunk))
            continue
        record = _record(envelope, 0, 0, 1, payload)
        if records and size + len(record) > chunk_bytes:
            messages.append(header + b"".join(records))
            records, size = [], 0
        records.append(record)
        size += len(record)
    if records:
        messages.append(header + b"".join(records))
    return messages


# -- decoding ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a pub/sub message: a whole envelope (``parts == 1``), or one part of a large one.
    ``kind`` is the raw byte: the receiver checks it (an unknown kind drops only its record)."""

    kind: int
    replica: str
    target: str
    message_id: int
    part: int
    parts: int
    payload: bytes


def message_sender(data: bytes) -> tuple[str, int]:
    """(sender, offset of the first record) of a pub/sub message; ProtocolError if it is not one of ours."""
    if len(data) < 2 or data[0] != WIRE_VERSION:
        raise ProtocolError("not a version-1 envelope message")
    reader = Reader(data)
    reader.pos = 1
    return reader.var_string("envelope sender"), reader.pos


def decode_records(data: bytes, sender: str, pos: int) -> list[Record]:
    """The records of a pub/sub message from ``pos`` on; ProtocolError for the whole message if one is bad."""
    records: list[Record] = []
    reader = Reader(data)
    reader.pos = pos
    while not reader.at_end():
        kind = data[reader.pos]
        reader.pos += 1
        target = reader.var_string("envelope target")
        message_id = reader.var_uint("envelope message id")
        part = reader.var_uint("envelope part")
        parts = reader.var_uint("envelope parts")
        if parts < 1 or part >= parts:
            raise ProtocolError(f"envelope part {part} of {parts}")
        payload = reader.var_bytes("envelope payload")
        records.append(Record(kind, sender, target, message_id, part, parts, payload))
    if not records:
        raise ProtocolError("a message without envelopes")
    return records


def decode_message(data: bytes) -> list[Record]:
    sender, pos = message_sender(data)
    return decode_records(data, sender, pos)


@dataclass(slots=True)
class _Partial:
    channel: bytes
    kind: int
    target: str
    parts: list[bytes | None]
    received: int = 0
    size: int = 0
    started: float = field(default_factory=time.monotonic)


class Reassembly:
    """Parts of large envelopes, by (sender, message id), until every part has arrived."""

    def __init__(self) -> None:
        self._partial: dict[tuple[str, int], _Partial] = {}
        self._bytes = 0

    def __repr__(self) -> str:
        return f"Reassembly(partial={len(self._partial)}, bytes={self._bytes})"

    def clear(self) -> None:
        self._partial.clear()
        self._bytes = 0

    def add(self, channel: bytes, record: Record) -> tuple[Envelope | None, list[bytes]]:
        """(the whole envelope once complete, channels whose partial envelopes had to be dropped).
        ValueError if the record's kind is unknown."""
        dropped: list[bytes] = []
        key = (record.replica, record.message_id)
        partial = self._partial.get(key)
        if partial is None:
            partial = _Partial(channel, record.kind, record.target, [None] * record.parts)
            self._partial[key] = partial
            dropped = self._expire()
        if len(partial.parts) != record.parts or partial.parts[record.part] is not None:
            # A sender restarted its message ids, or a part arrived twice: this envelope is lost.
            self._forget(key)
            return None, [*dropped, channel]
        partial.parts[record.part] = record.payload
        partial.received += 1
        partial.size += len(record.payload)
        self._bytes += len(record.payload)
        if partial.received < len(partial.parts):
            while self._bytes > _PARTIAL_MAX_BYTES and self._partial:
                oldest = next(iter(self._partial))
                dropped.append(self._partial[oldest].channel)
                self._forget(oldest)
            return None, dropped
        self._forget(key)
        payload = b"".join(part for part in partial.parts if part is not None)
        return Envelope(record.replica, Kind(partial.kind), payload, partial.target), dropped

    def _forget(self, key: tuple[str, int]) -> None:
        partial = self._partial.pop(key, None)
        if partial is not None:
            self._bytes -= partial.size

    def _expire(self) -> list[bytes]:
        limit = time.monotonic() - _PARTIAL_MAX_AGE
        stale = [key for key, partial in self._partial.items() if partial.started < limit]
        channels = [self._partial[key].channel for key in stale]
        for key in stale:
            self._forget(key)
        return channels
