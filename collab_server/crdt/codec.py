"""The framing of requests and answers between the server and its CRDT workers.

A frame is ``u32 length`` + body, little-endian. A request body is ``u32 count`` + that many ops; the
answer body is ``u32 count`` + one result per op, in order. Byte strings are ``u32 length`` + bytes.

An answer carries its byte strings of ``OUT_OF_LINE`` bytes or more (a board's snapshot or sync) after
its body instead of inside it: in the body such a string is the length ``0xFFFFFFFF``, and the answer
frame goes on with ``u32 n``, ``u32 length * n`` and the n strings, in the order the body names them.
The server reads each one in pieces as it arrives and joins them in a thread (``process``): a board's
bytes are then copied once, off the event loop, where slicing them out of one joined frame copied them
twice on it (about 50 ms a copy for a 54 MiB board, every room waiting).

Only bytes, integers and refusal codes cross the pipe: nothing the worker sends is unpickled, so a
worker that went wrong can at worst send a malformed answer, which the server treats as a dead worker.

    op      := u8 kind, bytes room, payload
      LOAD, FOLD:  u8 has_snapshot, [bytes snapshot], u32 n, bytes * n
      APPLY:       u8 joined, bytes update  (joined: in one transaction with the apply before it)
      DIFF, DOCUMENT: bytes state_vector | bytes call (crdt.document_calls)
      others:      (nothing)
    result  := u8 status (0 ok, else a Refusal), then when ok:
      LOAD:  bytes state_vector, u32 n, (i32 index, u8 refusal) * n
      APPLY: bytes emitted update, bytes state_vector, u8 new
      FOLD:  bytes snapshot, bytes state_vector, u32 n, u32 index * n, u32 m, (i32 index, u8 refusal) * m
      DIFF, STATE, DELETE_SET, FULL, DOCUMENT: bytes;  UNLOAD: (nothing)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from collab_server.crdt.engine import Applied, BadRow, Loaded, Refusal
from persistence.base import Folded

_U32: Final = struct.Struct("<I")
_I32_U8: Final = struct.Struct("<iB")
HEADER: Final = _U32.size


class Kind(IntEnum):
    LOAD = 1
    APPLY = 2
    DIFF = 3
    STATE = 4
    DELETE_SET = 5
    FULL = 6
    FOLD = 7
    UNLOAD = 8
    DOCUMENT = 9


_WITH_PAYLOAD = (Kind.DIFF, Kind.DOCUMENT)
OUT_OF_LINE: Final = 1 << 20
_OUT_OF_LINE_MARK: Final = 0xFFFFFFFF
# A malformed answer could announce any number of strings: more than this is garbage (a request carries
# at most 2,000 ops, _MAX_BATCH_OPS in pool.py, with at most two strings of this size each).
MAX_OUT_OF_LINE: Final = 8192


@dataclass(frozen=True, slots=True)
class Op:
    kind: Kind
    room: str
    payload: bytes = b""
    snapshot: bytes | None = None
    updates: tuple[bytes, ...] = ()
    # APPLY only: applied in one transaction with the APPLY before it in the request, when that one is
    # for the same room (``worker.handle_all``). The pool joins updates of one source within a tick.
    joined: bool = False

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.snapshot or b"") + sum(map(len, self.updates))


Result = Loaded | Applied | Folded | bytes | Refusal | None


class CodecError(Exception):
    """An answer or request that does not follow the framing."""


class Cursor:
    __slots__ = ("data", "pos", "strings", "taken")

    def __init__(self, data: bytes, strings: Sequence[bytes] = ()) -> None:
        self.data = data
        self.pos = 0
        self.strings = strings  # an answer's strings sent out of line, in order
        self.taken = 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise CodecError("truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise CodecError("truncated")
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def bad_row(self) -> BadRow:
        if self.pos + _I32_U8.size > len(self.data):
            raise CodecError("truncated")
        index, code = _I32_U8.unpack_from(self.data, self.pos)
        self.pos += _I32_U8.size
        return BadRow(index, _refusal(code))

    def bytes_(self) -> bytes:
        length = self.u32()
        if length == _OUT_OF_LINE_MARK:
            if self.taken >= len(self.strings):
                raise CodecError("an answer names more strings than it carries")
            self.taken += 1
            return self.strings[self.taken - 1]
        end = self.pos + length
        if end > len(self.data):
            raise CodecError("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk


def _refusal(code: int) -> Refusal:
    try:
        return Refusal(code)
    except ValueError:
        raise CodecError(f"unknown refusal {code}") from None


# Byte strings at least this long go out by reference, as buffers of their own, instead of being copied
# into the frame: a room's load or fold carries its whole snapshot (tens of MiB for a large board), and
# each copy of that on the event loop held every other room up (45-100 ms per 54 MiB copy, measured).
_BY_REFERENCE = 64 * 1024


class FrameWriter:
    """A frame as the buffers to write in order: small fields packed together, large byte strings as
    they are (``_BY_REFERENCE``). ``buffers()`` puts the frame's length in front. An answer's writer
    (``answer=True``) keeps its longest strings for after the body (``OUT_OF_LINE``)."""

    __slots__ = ("_done", "_out", "out_of_line")

    def __init__(self, *, answer: bool = False) -> None:
        self._done: list[bytes | bytearray] = []
        self._out = bytearray()
        self.out_of_line: list[bytes] | None = [] if answer else None

    def __iadd__(self, data: bytes) -> FrameWriter:
        if len(data) < _BY_REFERENCE:
            self._out += data
        else:
            self._done += (self._out, data)
            self._out = bytearray()
        return self

    def append(self, value: int) -> None:
        self._out.append(value)

    def buffers(self) -> list[bytes | bytearray]:
        parts = [part for part in (*self._done, self._out) if part]
        frame = [_U32.pack(sum(map(len, parts))), *parts]
        if self.out_of_line is not None:
            strings = self.out_of_line
            frame.append(struct.pack(f"<I{len(strings)}I", len(strings), *map(len, strings)))
            frame += strings
        return frame


def _bytes(out: FrameWriter, data: bytes) -> None:
    if out.out_of_line is not None and len(data) >= OUT_OF_LINE:
        out += _U32.pack(_OUT_OF_LINE_MARK)
        out.out_of_line.append(data)
        return
    out += _U32.pack(len(data))
    out += data


def answer_frame(body: bytes) -> list[bytes | bytearray]:
    """An answer frame holding ``body`` as it is (the worker's greeting)."""
    out = FrameWriter(answer=True)
    out += body
    return out.buffers()


def encode_ops(ops: list[Op]) -> list[bytes | bytearray]:
    """The request frame for ``ops``, as buffers to write in order (``FrameWriter``)."""
    out = FrameWriter()
    out += _U32.pack(len(ops))
    for op in ops:
        out.append(op.kind)
        _bytes(out, op.room.encode("utf-8"))
        if op.kind in (Kind.LOAD, Kind.FOLD):
            out.append(0 if op.snapshot is None else 1)
            if op.snapshot is not None:
                _bytes(out, op.snapshot)
            out += _U32.pack(len(op.updates))
            for update in op.updates:
                _bytes(out, update)
        elif op.kind is Kind.APPLY:
            out.append(1 if op.joined else 0)
            _bytes(out, op.payload)
        elif op.kind in _WITH_PAYLOAD:
            _bytes(out, op.payload)
    return out.buffers()


def decode_ops(body: bytes) -> list[Op]:
    cursor = Cursor(body)
    ops = []
    for _ in range(cursor.u32()):
        kind = Kind(cursor.u8())
        room = cursor.bytes_().decode("utf-8")
        if kind in (Kind.LOAD, Kind.FOLD):
            snapshot = cursor.bytes_() if cursor.u8() else None
            updates = tuple(cursor.bytes_() for _ in range(cursor.u32()))
            ops.append(Op(kind, room, snapshot=snapshot, updates=updates))
        elif kind is Kind.APPLY:
            joined = bool(cursor.u8())
            ops.append(Op(kind, room, cursor.bytes_(), joined=joined))
        elif kind in _WITH_PAYLOAD:
            ops.append(Op(kind, room, cursor.bytes_()))
        else:
            ops.append(Op(kind, room))
    return ops


def encode_results(results: list[Result]) -> list[bytes | bytearray]:
    """The answer frame for ``results``, as buffers to write in order (``FrameWriter``)."""
    out = FrameWriter(answer=True)
    out += _U32.pack(len(results))
    for result in results:
        if isinstance(result, Refusal):
            out.append(result)
            continue
        if isinstance(result, Applied) and result.refusal is not None:
            out.append(result.refusal)
            continue
        out.append(0)
        if isinstance(result, Loaded):
            _bytes(out, result.state_vector)
            out += _U32.pack(len(result.bad))
            for row in result.bad:
                out += _I32_U8.pack(row.index, row.refusal)
        elif isinstance(result, Applied):
            _bytes(out, result.update)
            _bytes(out, result.state_vector)
            out.append(1 if result.new else 0)
        elif isinstance(result, Folded):
            _bytes(out, result.snapshot)
            _bytes(out, result.state_vector)
            out += _U32.pack(len(result.folded))
            out += b"".join(_U32.pack(index) for index in result.folded)
            out += _U32.pack(len(result.bad))
            for index, _reason in result.bad:
                out += _I32_U8.pack(index, Refusal.LIBRARY_FAILURE)
        elif isinstance(result, bytes):
            _bytes(out, result)
    return out.buffers()


def decode_results(kinds: list[Kind], body: bytes, strings: Sequence[bytes] = ()) -> list[Result]:
    """Results of the ops of ``kinds`` from an answer's body and its ``strings`` sent out of line;
    CodecError if the answer does not match the request."""
    cursor = Cursor(body, strings)
    if cursor.u32() != len(kinds):
        raise CodecError("answer count does not match the request")
    results: list[Result] = []
    for kind in kinds:
        status = cursor.u8()
        if status:
            refusal = _refusal(status)
            results.append(Applied(refusal) if kind is Kind.APPLY else refusal)
        elif kind is Kind.LOAD:
            state_vector = cursor.bytes_()
            results.append(Loaded(state_vector, [cursor.bad_row() for _ in range(cursor.u32())]))
        elif kind is Kind.APPLY:
            update, state_vector = cursor.bytes_(), cursor.bytes_()
            results.append(Applied(None, update, state_vector, bool(cursor.u8())))
        elif kind is Kind.FOLD:
            snapshot, state_vector = cursor.bytes_(), cursor.bytes_()
            folded = [cursor.u32() for _ in range(cursor.u32())]
            bad = [cursor.bad_row() for _ in range(cursor.u32())]
            results.append(Folded(snapshot, state_vector, folded, [(r.index, r.refusal.reason) for r in bad]))
        elif kind is Kind.UNLOAD:
            results.append(None)
        else:
            results.append(cursor.bytes_())
    if cursor.pos != len(body) or cursor.taken != len(strings):
        raise CodecError("trailing bytes in an answer")
    return results
