"""The y-websocket wire protocol.

A websocket frame carries one or more *messages*, each ``varUint(type)`` followed by a body:

    0 sync        varUint(sub) varUint8Array(payload)   sub: 0 step1 (state vector), 1 step2, 2 update
    1 awareness   varUint8Array(awareness update)
    2 auth        varUint(permission) [varString(reason)]
    3 query-awareness  (no body)

Incoming frames are decoded strictly: every length is checked against the frame, varints longer than
lib0 accepts (53 bits) are refused, and a frame with a bad message anywhere is refused whole, so a peer
never gets half of a frame applied. Every count and size a client controls has a bound (``FrameLimits``):
messages per frame, state vector entries, awareness entries per message, bytes and JSON nesting depth of
one awareness state. Awareness states must be JSON that every client can ``JSON.parse``: ``NaN`` and
``Infinity`` are refused, and nesting is measured before parsing, so ``json.loads`` never recurses deep
enough to raise RecursionError. Every refusal is a ProtocolError in our own words.

Outgoing messages are built with pycrdt's encoders, which are correct for byte payloads, except sync step2
and update messages, which are built here with one copy of their payload (pycrdt's copy it twice: a full
board's step2 is tens of MiB, copied on the event loop). Strings are written here because pycrdt's
``Encoder.write_var_string`` prefixes the *character* count, which corrupts non-ASCII text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycrdt import create_awareness_message, write_var_uint
from pycrdt._sync import create_sync_step1_message

from collab_server.errors import ProtocolError

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3
# A state vector of no clients: a peer that holds nothing (a fresh provider); a diff against it is the whole
# document.
EMPTY_STATE_VECTOR = b"\x00"

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

# lib0's readVarUint refuses numbers above Number.MAX_SAFE_INTEGER; so do we.
_MAX_VAR_UINT = 2**53 - 1

__all__ = [
    "DEFAULT_LIMITS",
    "EMPTY_STATE_VECTOR",
    "AuthMessage",
    "AwarenessEntry",
    "AwarenessMessage",
    "FrameLimits",
    "QueryAwareness",
    "Reader",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "decode_awareness",
    "decode_frame",
    "decode_state_vector",
    "encode_awareness",
    "encode_awareness_message",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
]


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    """An awareness update; ``message`` is the whole encoded message, relayed as received."""

    update: bytes
    message: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class AuthMessage:
    permission: int


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Bounds on what one incoming frame may hold (the ``COLLAB_MAX_*`` settings)."""

    messages: int = 512
    state_vector_clients: int = 100_000
    awareness_entries: int = 5000
    awareness_state_bytes: int = 64 * 1024
    awareness_depth: int = 64


DEFAULT_LIMITS = FrameLimits()

Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness | AuthMessage


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state. ``state`` is its JSON text; ``"null"`` means the client left."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


class Reader:
    """Bounds-checked cursor over a bytes object; every error is a ProtocolError naming what broke."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def var_uint(self, what: str = "varint") -> int:
        data, pos = self.data, self.pos
        value = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise ProtocolError(f"truncated varint in {what}")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 53:
                raise ProtocolError(f"varint too long in {what}")
        if value > _MAX_VAR_UINT:
            raise ProtocolError(f"varint out of range in {what}")
        self.pos = pos
        return value

    def u8(self, what: str = "byte") -> int:
        if self.pos >= len(self.data):
            raise ProtocolError(f"truncated {what}")
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def skip(self, count: int, what: str = "bytes") -> None:
        if self.pos + count > len(self.data):
            raise ProtocolError(f"truncated {what}: {count} bytes needed, {len(self.data) - self.pos} remain")
        self.pos += count

    def var_int(self, what: str = "signed varint") -> int:
        """lib0's signed varint: the first byte holds a continuation bit, the sign bit and 6 value bits."""
        first = self.u8(what)
        negative = bool(first & 0x40)
        value = first & 0x3F
        if first & 0x80:
            # The rest is an unsigned varint of 7-bit groups, shifted past the first byte's 6 bits.
            value |= self.var_uint(what) << 6
            if value > _MAX_VAR_UINT:
                raise ProtocolError(f"varint out of range in {what}")
        return -value if negative else value

    def var_bytes(self, what: str = "byte string") -> bytes:
        length = self.var_uint(what)
        end = self.pos + length
        if end > len(self.data):
            raise ProtocolError(
                f"truncated {what}: length says {length} bytes, {len(self.data) - self.pos} remain"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def var_string(self, what: str) -> str:
        return _utf8(self.var_bytes(what), what)


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid UTF-8") from exc


def decode_frame(frame: bytes, limits: FrameLimits = DEFAULT_LIMITS) -> list[Message]:
    """Decode every message in one incoming frame, or raise ProtocolError for the whole frame."""
    if not frame:
        raise ProtocolError("empty frame")
    reader = Reader(frame)
    messages: list[Message] = []
    while not reader.at_end():
        if len(messages) >= limits.messages:
            raise ProtocolError(f"frame holds more than {limits.messages} messages")
        start = reader.pos
        kind = reader.var_uint("message type")
        if kind == MESSAGE_SYNC:
            sub = reader.var_uint("sync message type")
            payload = reader.var_bytes("sync payload")
            if sub == SYNC_STEP1:
                # Checked here so that a malformed or oversized state vector never reaches the CRDT library.
                check_state_vector(payload, limits.state_vector_clients)
                messages.append(SyncStep1(payload))
            elif sub == SYNC_STEP2:
                messages.append(SyncStep2(payload))
            elif sub == SYNC_UPDATE:
                messages.append(SyncUpdate(payload))
            else:
                raise ProtocolError(f"unknown sync message type {sub}")
        elif kind == MESSAGE_AWARENESS:
            payload = reader.var_bytes("awareness payload")
            messages.append(AwarenessMessage(payload, frame[start : reader.pos]))
        elif kind == MESSAGE_QUERY_AWARENESS:
            messages.append(QueryAwareness())
        elif kind == MESSAGE_AUTH:
            permission = reader.var_uint("auth permission")
            if not reader.at_end():
                reader.var_string("auth reason")
            messages.append(AuthMessage(permission))
        else:
            raise ProtocolError(f"unknown message type {kind}")
    return messages


def decode_awareness(update: bytes, limits: FrameLimits = DEFAULT_LIMITS) -> list[AwarenessEntry]:
    """Decode an awareness update; every state must be JSON that any client can ``JSON.parse``."""
    cached = _last_awareness
    if cached is not None and cached[0] is update:
        # The websocket endpoint checks each awareness message (with the configured limits) just before
        # the room applies it: the same bytes object, decoded once. (The cache holds the bytes, so their
        # id cannot be reused by another object; it is let go at once.)
        _remember_awareness(None)
        return cached[1]
    reader = Reader(update)
    count = reader.var_uint("awareness entry count")
    if count > limits.awareness_entries:
        raise ProtocolError(f"awareness message carries {count} client states, more than {limits.awareness_entries}")
    entries: list[AwarenessEntry] = []
    for _ in range(count):
        client_id = reader.var_uint("awareness client id")
        clock = reader.var_uint("awareness clock")
        raw = reader.var_bytes("awareness state")
        state = _utf8(raw, f"awareness state of client {client_id}")
        if state != "null":
            # Imported here: the CRDT workers import this module and need none of it.
            from collab_server.jsoncheck import json_problem

            problem = json_problem(raw, state, limits.awareness_state_bytes, limits.awareness_depth)
            if problem is not None:
                raise ProtocolError(f"awareness state of client {client_id} {problem}")
        entries.append(AwarenessEntry(client_id, clock, state))
    if not reader.at_end():
        raise ProtocolError("trailing bytes after awareness entries")
    _remember_awareness(update, entries)
    return entries


_last_awareness: tuple[bytes, list[AwarenessEntry]] | None = None


def _remember_awareness(update: bytes | None, entries: list[AwarenessEntry] | None = None) -> None:
    global _last_awareness
    _last_awareness = None if update is None or entries is None else (update, entries)


def check_state_vector(state_vector: bytes, max_clients: int) -> None:
    """Refuse a malformed state vector, or one with more than ``max_clients`` entries."""
    reader = Reader(state_vector)
    count = reader.var_uint("state vector length")
    if count > max_clients:
        raise ProtocolError(f"state vector has {count} entries, more than {max_clients}")
    for _ in range(count):
        reader.var_uint("state vector client")
        reader.var_uint("state vector clock")
    if not reader.at_end():
        raise ProtocolError("trailing bytes after the state vector")


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """``{client id: clock}`` of an encoded Yjs state vector."""
    reader = Reader(state_vector)
    result: dict[int, int] = {}
    for _ in range(reader.var_uint("state vector length")):
        client = reader.var_uint("state vector client")
        result[client] = reader.var_uint("state vector clock")
    return result


def _var_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return write_var_uint(len(raw)) + raw


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    """Encode an awareness update (the payload of an awareness message)."""
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts.append(write_var_uint(entry.client_id))
        parts.append(write_var_uint(entry.clock))
        parts.append(_var_string(entry.state))
    return b"".join(parts)


def encode_awareness_message(entries: list[AwarenessEntry]) -> bytes:
    return create_awareness_message(encode_awareness(entries))


def encode_sync_step1(state_vector: bytes) -> bytes:
    return create_sync_step1_message(state_vector)


_SYNC_STEP2 = bytes((MESSAGE_SYNC, SYNC_STEP2))
_SYNC_UPDATE = bytes((MESSAGE_SYNC, SYNC_UPDATE))


def encode_sync_step2(update: bytes) -> bytes:
    return b"".join((_SYNC_STEP2, write_var_uint(len(update)), update))


def encode_update(update: bytes) -> bytes:
    return b"".join((_SYNC_UPDATE, write_var_uint(len(update)), update))


def encode_query_awareness() -> bytes:
    return bytes([MESSAGE_QUERY_AWARENESS])
