"""Decode a stored document into a Board in a child process, with a timeout.

Stored bytes are untrusted as far as pycrdt goes: on some malformed input it panics, crashes the process
or never returns (issue 8). In the embedded default the worker runs inside the server, which owns every
room's sockets, so the merge never happens there: a child ``python -m exports.decode`` reads the
snapshot and updates on stdin and writes the Board as JSON on stdout; a crash is a non-zero exit, a hang
is killed at the deadline. Both fail the job (``invalid_board``), never the server.

A room that is not a tldraw board gets its document JSON here too (exports.document_view: the document
REST endpoint's own code), so that untrusted decode also stays out of the server.

One child per decode, but started ahead: a ``Decoder`` keeps the next child running (Python up, its
modules imported, waiting on stdin) while the worker idles or renders, so a job does not wait the ~0.1 s
(more on a busy machine) a Python start takes. Each child still decodes exactly one document and exits.
Children run at the export work's low CPU priority (exports.priority).

stdin: ``u32 count`` then ``count`` times ``u32 length + bytes``: first a JSON header (``room``,
``limits``), then the snapshot (length 0 for none), then the updates. All integers big-endian.
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
from pathlib import Path

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


class Decoder:
    """Decodes stored documents in child processes, one child per document, the next one started ahead
    (``spare``). ``close`` stops the child kept in reserve; decoding after it starts a new one."""

    def __init__(
        self, *, timeout: float, niceness: int = 10, limits: DocumentLimits = DEFAULT_LIMITS, spare: bool = True
    ) -> None:
        self.timeout = timeout
        self.niceness = niceness
        self.limits = limits
        self._keep_spare = spare
        self._next: asyncio.Task[asyncio.subprocess.Process] | None = None

    async def _start(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exports.decode",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        with contextlib.suppress(OSError):  # export work yields the CPU to the server (exports.priority)
            os.setpriority(os.PRIO_PROCESS, proc.pid, self.niceness)
            if self.niceness >= 19 and hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
        return proc

    async def _child(self) -> asyncio.subprocess.Process:
        """The child started ahead if it is still alive, else a new one; and the next one started."""
        ready, self._next = self._next, None
        proc = None
        if ready is not None:
            with contextlib.suppress(Exception):
                proc = await ready
            if proc is not None and not _waiting(proc):
                await _reap(proc)
                proc = None
        if proc is None:
            proc = await self._start()
        if self._keep_spare:
            self._next = asyncio.create_task(self._start(), name="export-decode-spare")
        return proc

    async def decode(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Board:
        """The room's Board; InvalidBoard if the child crashes or refuses the bytes, RenderTimeout if slow."""
        header = json.dumps({"room": room, "limits": dataclasses.asdict(self.limits)}).encode()
        proc = await self._child()
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(_frame([header, snapshot or b"", *updates])), self.timeout
            )
        except TimeoutError:
            raise RenderTimeout(f"decoding the stored document took longer than {self.timeout:g} s") from None
        finally:
            await _reap(proc)
        if proc.returncode != 0:
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise InvalidBoard(f"the stored document cannot be decoded ({reason[0][:300]})")
        return Board.from_json(json.loads(out))

    async def close(self) -> None:
        ready, self._next = self._next, None
        if ready is not None:
            with contextlib.suppress(Exception):
                await _reap(await ready)


def _waiting(proc: asyncio.subprocess.Process) -> bool:
    """Is a child started ahead still alive? asyncio learns of a child's death only later, from its watcher:
    a killed child (the OOM killer, an operator) is seen here as a zombie in /proc, and not used."""
    if proc.returncode is not None:
        return False
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to ask: trust asyncio
    return stat[stat.rindex(")") + 2] not in "ZX"


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


async def decode_board(
    room: str,
    snapshot: bytes | None,
    updates: Sequence[bytes],
    *,
    timeout: float,
    niceness: int = 10,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> Board:
    """The room's Board, decoded in a child process started for it (no child kept in reserve)."""
    decoder = Decoder(timeout=timeout, niceness=niceness, limits=limits, spare=False)
    return await decoder.decode(room, snapshot, updates)


def _main(argv: list[str]) -> int:
    # Imported here: the parent never loads pycrdt for this.
    from exports.document_view import document_json
    from exports.tldr import board_from_doc
    from persistence.merge import build_doc

    data = sys.stdin.buffer.read()  # a child started ahead waits here, its imports done
    if not data:
        return 2  # closed unused (the worker stopped)
    parts = _unframe(data)
    header = json.loads(parts.pop(0))
    room, limits = str(header["room"]), DocumentLimits(**header["limits"])
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
