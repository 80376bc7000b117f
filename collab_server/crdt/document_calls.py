"""Document calls: the REST document logic (``collab_server.documents``) run in a CRDT worker.

Reading a document as JSON, turning a JSON patch into an update, computing a restore, diffing a stored
version, or checking an update a client posted all run pycrdt on bytes someone else supplied, so they run
where every other call into the library runs: in a worker process (``DocumentEngine.compute``). They are
stateless, bytes in and bytes out, so the pool sends them to workers of their own, apart from the ones
holding rooms: a long JSON view never holds up a room's live edits.

A call crosses the pipe as ``u32 n`` + a JSON header (action, hints, limits) + ``u32 n`` + the document +
the rest (the other operand). The answer is one tag byte and its body; nothing is unpickled either way.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from collab_server.documents import DEFAULT_LIMITS, DocumentLimits, document_json, patch_update, restore_update
from collab_server.documents.loading import call_pycrdt, load
from collab_server.errors import DocumentError, ProtocolError
from collab_server.protocol import decode_state_vector

_U32 = struct.Struct("<I")
_VIEW, _UPDATE, _ERROR = 0, 1, 2


class Action(StrEnum):
    CHECK = "check"  # is ``document`` an update the library takes? (nothing comes back)
    VIEW = "view"  # ``document`` (a full state) as JSON
    DIFF = "diff"  # what ``document`` has beyond the state vector ``other``
    PATCH = "patch"  # the update that applies the JSON patch ``other`` to ``document``
    RESTORE = "restore"  # the update that makes ``document``'s content equal to ``other``'s


@dataclass(frozen=True, slots=True)
class DocumentCall:
    """One call: an action, its operands, the type hints and tldraw room name, and the limits."""

    action: Action
    document: bytes
    other: bytes = b""
    types: dict[str, str] = field(default_factory=dict)
    room: str | None = None
    limits: DocumentLimits = DEFAULT_LIMITS

    @property
    def size(self) -> int:
        return len(self.document) + len(self.other)


@dataclass(frozen=True, slots=True)
class DocumentAnswer:
    """What a call gives back: an update (check, diff, patch, restore) or a JSON view (``content`` is the
    JSON text, ready to send; ``layout`` and ``types`` describe it)."""

    update: bytes = b""
    content: bytes = b""
    layout: str = ""
    types: dict[str, str | None] = field(default_factory=dict)


class CallError(Exception):
    """A call or an answer that does not follow the framing."""


def encode_call(call: DocumentCall) -> bytes:
    header = json.dumps(
        {"action": call.action.value, "types": call.types, "room": call.room, "limits": dataclasses.asdict(call.limits)}
    ).encode()
    return b"".join((_U32.pack(len(header)), header, _U32.pack(len(call.document)), call.document, call.other))


def decode_call(payload: bytes) -> DocumentCall:
    try:
        (length,) = _U32.unpack_from(payload, 0)
        header = json.loads(payload[4 : 4 + length])
        (size,) = _U32.unpack_from(payload, 4 + length)
        start = 8 + length
        if start + size > len(payload):
            raise CallError("truncated call")
        return DocumentCall(
            Action(header["action"]),
            payload[start : start + size],
            payload[start + size :],
            dict(header["types"]),
            header["room"],
            DocumentLimits(**header["limits"]),
        )
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CallError(f"malformed document call: {exc}") from exc


def run(payload: bytes) -> bytes:
    """In the worker: one call, answered; a DocumentError (or a bug here) is an answer, not a crash."""
    try:
        call = decode_call(payload)
        return _run(call)
    except DocumentError as exc:
        return _error(exc.code, exc.detail)
    except Exception as exc:  # a bug in the document logic must not take the worker down with it
        return _error("internal", f"{type(exc).__name__}: {exc}")


def _run(call: DocumentCall) -> bytes:
    limits, room = call.limits, call.room
    if call.action is Action.VIEW:
        view = document_json(call.document, types=call.types, room=room, limits=limits)
        meta = json.dumps({"layout": view.layout, "types": view.types}).encode()
        content = json.dumps(view.content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        return bytes([_VIEW]) + _U32.pack(len(meta)) + meta + content
    if call.action is Action.CHECK:
        load(call.document, limits)
        return bytes([_UPDATE])
    if call.action is Action.DIFF:
        loaded = load(call.document, limits)
        try:
            decode_state_vector(call.other)  # our own decoder first: the library never sees a bad one
        except ProtocolError as exc:
            raise DocumentError("invalid_state_vector", f"the state vector cannot be decoded: {exc}") from exc
        diff = call_pycrdt("diff failed", lambda: loaded.doc.get_update(call.other))
        return bytes([_UPDATE]) + diff
    if call.action is Action.PATCH:
        try:
            patch = json.loads(call.other)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DocumentError("malformed_json", f"the patch is not valid JSON: {exc}") from exc
        if room is None:
            raise DocumentError("internal", "a patch needs the room's name")
        return bytes([_UPDATE]) + patch_update(call.document, patch, room=room, limits=limits)
    update = restore_update(call.document, call.other, types=call.types, room=room, limits=limits)
    return bytes([_UPDATE]) + update


def _error(code: str, detail: str) -> bytes:
    return bytes([_ERROR]) + json.dumps({"code": code, "detail": detail}).encode()


def decode_answer(answer: bytes) -> DocumentAnswer:
    """On the server: the answer of ``run``; DocumentError if the call failed, CallError if garbled."""
    if not answer:
        raise CallError("empty answer")
    tag, body = answer[0], answer[1:]
    try:
        if tag == _UPDATE:
            return DocumentAnswer(update=body)
        if tag == _VIEW:
            (length,) = _U32.unpack_from(body, 0)
            meta: dict[str, Any] = json.loads(body[4 : 4 + length])
            return DocumentAnswer(content=body[4 + length :], layout=str(meta["layout"]), types=dict(meta["types"]))
        if tag == _ERROR:
            error = json.loads(body)
            raise DocumentError(str(error["code"]), str(error["detail"]))
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CallError(f"malformed document answer: {exc}") from exc
    raise CallError(f"unknown answer tag {tag}")
