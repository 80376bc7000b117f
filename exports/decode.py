"""Decode a stored document into a Board in a child process, with a timeout.

Stored bytes are untrusted as far as pycrdt goes: on some malformed input it panics, crashes the process
or never returns (issue 8). In the embedded default the worker runs inside the server, which owns every
room's sockets, so the merge never happens there: a child ``python -m exports.decode`` reads the
snapshot and updates on stdin and writes the Board as JSON on stdout; a crash is a non-zero exit, a hang
is killed at the deadline. Both fail the job (``invalid_board``), never the server.

A room that is not a tldraw board gets its document JSON here too (exports.document_view: the document
REST endpoint's own code), so that untrusted decode also stays out of the server.

stdin: ``u32 count`` then ``count`` times ``u32 length + bytes``; the first part is the snapshot (length
0 for none); the room name comes as argv[1], the document limits as JSON in argv[2]. All integers
big-endian.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import struct
import sys
from collections.abc import Sequence

from collab_server.documents import DEFAULT_LIMITS, DocumentLimits
from exports.errors import InvalidBoard, RenderTimeout
from exports.tldr import Board


def _frame(parts: Sequence[bytes]) -> bytes:
    out = [struct.pack(">I", len(parts))]
    for part in parts:
        out.append(struct.pack(">I", len(part)))
        out.append(part)
    return b"".join(out)


def _unframe(data: bytes) -> list[bytes]:
    (count,), offset, parts = struct.unpack_from(">I", data), 4, []
    for _ in range(count):
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        parts.append(data[offset : offset + length])
        offset += length
    return parts


async def decode_board(
    room: str,
    snapshot: bytes | None,
    updates: Sequence[bytes],
    *,
    timeout: float,
    niceness: int = 10,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> Board:
    """The room's Board, decoded in a child process; InvalidBoard if it crashes or refuses the bytes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exports.decode",
        room,
        json.dumps(dataclasses.asdict(limits)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    with contextlib.suppress(OSError):  # export work yields the CPU to the server (exports.priority)
        os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
        if niceness >= 19 and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
    try:
        out, err = await asyncio.wait_for(proc.communicate(_frame([snapshot or b"", *updates])), timeout)
    except TimeoutError:
        raise RenderTimeout(f"decoding the stored document took longer than {timeout:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise InvalidBoard(f"the stored document cannot be decoded ({reason[0][:300]})")
    return Board.from_json(json.loads(out))


def _main(argv: list[str]) -> int:
    # Imported here: the parent never loads pycrdt for this.
    from exports.document_view import document_json
    from exports.tldr import board_from_doc
    from persistence.merge import build_doc

    room = argv[1]
    limits = DocumentLimits(**json.loads(argv[2])) if len(argv) > 2 else DEFAULT_LIMITS
    parts = _unframe(sys.stdin.buffer.read())
    try:
        doc = build_doc(room, parts[0] or None, parts[1:])
        board = board_from_doc(doc, room)
        if not board.is_tldraw:
            board = dataclasses.replace(board, document=document_json(doc.get_update(), room, limits))
    except BaseException as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    sys.stdout.write(json.dumps(board.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
