"""A CRDT worker process: ``python -m collab_server.crdt.worker``.

It reads request frames on stdin, handles their ops in order against the documents it holds, and writes
one answer frame per request on stdout (``collab_server.crdt.codec``). It has no sockets, no store and no
event loop: if an update makes it crash or hang, the server's watchdog kills it and starts another
(``collab_server.crdt.pool``), and nothing else is lost. Python's own output goes to stderr, which the
server reads line by line into its log: a Rust panic message included.

Between requests it cools the rooms that have had no update for ``COLLAB_IDLE_DOCUMENT_SECONDS``
(``documents``): one at a time, and only while no request waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import sys
from typing import BinaryIO

from collab_server.crdt.codec import HEADER, Kind, Op, Result, answer_frame, decode_ops, encode_results
from collab_server.crdt.documents import Documents
from collab_server.native_memory import RELEASE_AFTER_BYTES, release_free_memory

READY = b"collab-crdt-worker/1"
PARENT_ENV = "COLLAB_CRDT_WORKER_PARENT"  # the server's pid, set by process.WorkerProcess
NICE_ENV = "COLLAB_CRDT_WORKER_NICE_INCREMENT"  # set by process.WorkerProcess
IDLE_ENV = "COLLAB_CRDT_WORKER_IDLE_SECONDS"  # set by process.WorkerProcess; 0: never cool a room
_PIPE_BYTES = 1 << 20


def handle(documents: Documents, op: Op) -> Result:
    """One op against ``documents``; refusals are returned as values."""
    kind, room = op.kind, op.room
    if kind is Kind.APPLY:
        return documents.apply(room, op.payload)
    if kind is Kind.DIFF:
        return documents.diff(room, op.payload)
    if kind is Kind.STATE:
        return documents.state_vector(room)
    if kind is Kind.LOAD:
        return documents.load(room, op.snapshot, op.updates)
    if kind is Kind.DELETE_SET:
        return documents.delete_set(room)
    if kind is Kind.FULL:
        return documents.full_state(room)
    if kind is Kind.FOLD:
        return documents.fold(room, op.snapshot, op.updates)
    if kind is Kind.DOCUMENT:
        # Imported on first use: only document workers (crdt.pool) ever get these calls.
        from collab_server.crdt import document_calls

        return document_calls.run(op.payload)
    documents.unload(room)
    return None


def handle_all(documents: Documents, ops: list[Op]) -> list[Result]:
    """The results of one request's ops, in order. A run of joined applies to one room is applied in one
    transaction: the library's commit costs time in proportion to the document (a long text is one
    block whose length is counted again at every commit), so a transaction per update grows slower as the
    document grows, and a transaction per run pays that once (docs/upstream/README.md)."""
    results: list[Result] = []
    start = 0
    while start < len(ops):
        op = ops[start]
        end = start + 1
        if op.kind is Kind.APPLY:
            while end < len(ops) and ops[end].kind is Kind.APPLY and ops[end].joined and ops[end].room == op.room:
                end += 1
        if end - start > 1:
            results.extend(documents.apply_run(op.room, [o.payload for o in ops[start:end]]))
        else:
            results.append(handle(documents, op))
        start = end
    return results


def _read_exactly(stream: BinaryIO, count: int) -> bytes | None:
    chunks = []
    while count:
        # At most a pipe-full a read: an unbuffered read allocates all it is asked for before it reads.
        chunk = stream.read(min(count, _PIPE_BYTES))
        if not chunk:
            return None
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _cool_until_request(documents: Documents, requests: BinaryIO, idle_seconds: float) -> None:
    """Wait for the next request, cooling the rooms idle for ``idle_seconds`` meanwhile, one at a time:
    a request that arrives is answered before the next room is cooled. ``requests`` is unbuffered
    (``main``), so the pipe being empty means no request waits. Once no room is due, the memory the
    cooled documents held goes back to the system (the library holds a document at 4 to 23 times its
    encoded size, so their bases' bytes say little of it). A decompressed snapshot kept for syncs
    (``Documents.unpacked_due``) is let go here too, once it has not been used for a while."""
    let_go = False  # something was let go since the memory was last given back
    while True:
        due = documents.cooling_due(idle_seconds)
        if let_go and due != 0:
            let_go = False
            documents.unloaded_bytes = 0
            release_free_memory()
        if select.select([requests], [], [], _sooner(due, documents.unpacked_due()))[0]:
            return
        if documents.unpacked_due() == 0:
            documents.forget_unpacked()
            let_go = True
        let_go = documents.cool_one(idle_seconds) or let_go


def _sooner(a: float | None, b: float | None) -> float | None:
    """The shorter of two waits, where None is for ever."""
    return b if a is None else a if b is None else min(a, b)


def warm_up() -> None:
    """Pay the library's first-use costs before the worker says it is ready. The first document a process
    loads makes pycrdt import asyncio and more (15 ms on a fast machine, 41 ms in a connect storm): inside
    the first request, that held a storm's first syncs and, on a shared core, the event loop behind them."""
    Documents().load("", None, [])


def serve(requests: BinaryIO, answers: BinaryIO, idle_seconds: float = 0.0) -> None:
    warm_up()
    documents = Documents()
    answers.writelines(answer_frame(READY))
    answers.flush()
    while True:
        if idle_seconds > 0:
            _cool_until_request(documents, requests, idle_seconds)
        header = _read_exactly(requests, HEADER)
        if header is None:
            return  # the server closed the pipe: exit quietly
        body = _read_exactly(requests, int.from_bytes(header, "little"))
        if body is None:
            return
        ops = decode_ops(body)
        answer = encode_results(handle_all(documents, ops))
        answers.writelines(answer)
        answers.flush()
        if len(body) + sum(map(len, answer)) + documents.unloaded_bytes >= RELEASE_AFTER_BYTES:
            del body, ops, answer
            documents.unloaded_bytes = 0
            release_free_memory()


def lower_priority() -> None:
    """Run below the server (``COLLAB_CRDT_WORKER_NICE``). When workers crash-loop or chew on heavy
    updates on a short CPU, the process that owns the sockets must still answer pings and /healthz and
    fan out the edits of every other room; the watchdog counts a worker's CPU time, so a worker that
    waits for the CPU is not taken for a hung one."""
    increment = int(os.environ.get(NICE_ENV, "0"))
    if increment > 0:
        os.nice(increment)


def die_with_the_server() -> None:
    """Have the kernel kill this worker when the server that started it dies (Linux ``PR_SET_PDEATHSIG``).
    A worker reads the end of its input and exits when the server goes away, except one looping inside
    the library, which never reads again: after a SIGKILL of its server it would spin forever (seen: an
    orphan at 92 % of a core for 9 minutes after ``rooms check`` was killed)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(os.environ.get(PARENT_ENV, os.getppid())):
        os._exit(0)  # the server died before the request above was made: nobody is left to serve


def widen_pipes() -> None:
    """Make the request and answer pipes 1 MiB (Linux; 64 KiB by default). The server writes a board's
    snapshot into the request pipe as fast as the worker drains it, one write per pipe-full: at 64 KiB,
    1,700 writes for a 54 MiB board written and compacted (500 ms of the event loop's time, py-spy). Where
    the system caps pipes lower (``/proc/sys/fs/pipe-max-size``), they keep their size."""
    size_flag = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size_flag is None:
        return
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, size_flag, _PIPE_BYTES)


def main() -> None:
    die_with_the_server()
    lower_priority()
    widen_pipes()
    # The answer pipe is fd 1; anything printed must not corrupt it, so stdout becomes stderr.
    answers = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Unbuffered: a read never takes more than the request asked for, so an empty pipe means that no
    # request waits (``_cool_until_request``). A request is its header and body: two reads.
    requests = os.fdopen(0, "rb", buffering=0)
    try:
        serve(requests, answers, float(os.environ.get(IDLE_ENV, "0")))
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
