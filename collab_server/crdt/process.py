"""One CRDT worker process, seen from the server: spawn it, send a request, read its answer, kill it.

The process is a plain child (``python -m collab_server.crdt.worker``) talking over its stdin/stdout
pipes, not a fork of the server: a fork would inherit the event loop, the store's threads and every
socket. Its stderr is read line by line into the server's log (``native_stderr.NativeReport``: one
record per panic, rate-limited, counted), so a Rust panic message goes through logging (and
``--log-json``) instead of raw to the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from collab_server.crdt.codec import HEADER, MAX_OUT_OF_LINE, CodecError
from collab_server.crdt.worker import IDLE_ENV, NICE_ENV, PARENT_ENV, READY
from collab_server.native_stderr import NativeReport

logger = logging.getLogger(__name__)

_ROOT = str(Path(__file__).resolve().parents[2])
_READ_IN_PIECES = 1 << 20


Answer = tuple[bytes, list[bytes]]  # an answer's body, and its strings sent out of line (``codec``)


async def _read_exactly(stream: asyncio.StreamReader, size: int) -> bytes:
    """``size`` bytes of ``stream``. A large string (a board's snapshot or sync: tens of MiB) is taken in
    pieces as it arrives, and the pieces are joined in a thread: ``bytes.join`` lets go of the GIL for a
    large join, so the copy never holds the event loop (a 54 MiB join held it 46 ms, measured). Left to
    pile up in the stream's buffer for ``readexactly``, it grew that buffer by reallocations that copied
    it again and again: 360 ms of the loop for a 54 MiB answer."""
    if size < _READ_IN_PIECES:
        return await stream.readexactly(size)
    pieces, remaining = [], size
    while remaining:
        piece = await stream.read(min(remaining, _READ_IN_PIECES))
        if not piece:
            raise asyncio.IncompleteReadError(b"", remaining)
        pieces.append(piece)
        remaining -= len(piece)
    return await asyncio.to_thread(b"".join, pieces)


def _cpu_clock_of(pid: int) -> int | None:
    """The id of process ``pid``'s CPU-time clock (``clock_getcpuclockid(3)``, which Python does not
    wrap), or None where the C library has none for another process (it is Linux's)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    clock = ctypes.c_int()  # clockid_t
    if ctypes.CDLL(None).clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    return clock.value


class WorkerDied(Exception):
    """The worker exited, closed its pipe, or answered something that is not a frame."""


class WorkerProcess:
    """A running worker. ``request`` is not reentrant: the pool sends one request at a time."""

    def __init__(self, index: int, *, nice: int = 0, idle_seconds: float = 0.0) -> None:
        self.index = index
        self.nice = nice  # added to the server's niceness in the worker (``worker.lower_priority``)
        self.idle_seconds = idle_seconds  # a room idle this long is cooled (``worker``; 0: never)
        self._process: asyncio.subprocess.Process | None = None
        self._cpu_clock: int | None = None  # the process's CPU-time clock (``cpu_seconds``)
        self._stderr_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"WorkerProcess(index={self.index}, pid={pid})"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def cpu_seconds(self) -> float | None:
        """CPU time the worker has used (user + system), or None where the system cannot tell (no CPU
        clock for another process, or the process is gone): the watchdog then falls back to wall time.

        Read from the process's CPU-time clock: one system call, exact to the nanosecond. The pool reads it
        at every request (``pool._within_deadline``) and around a retried op (``pool._note_heavy``);
        ``/proc/PID/stat``, read before, counts in 10 ms ticks (the default deadline is 100 of them) and
        costs an open, a read and a parse (7.5 us against 0.25; 1,375 requests in the 1,000-room bench)."""
        clock = self._cpu_clock
        if clock is None or self._process is None or self._process.returncode is not None:
            # Reaped (asyncio sets the return code as it reaps): its pid, and so the clock's id, may
            # already belong to another process, whose CPU time the watchdog would read.
            return None
        try:
            return time.clock_gettime(clock)
        except OSError:
            return None  # the process has been reaped

    async def start(self, timeout: float) -> None:
        env = {
            **os.environ,
            # Short panic messages (no backtrace with build paths); they are logged line by line.
            "RUST_BACKTRACE": "0",
            # Freed memory filled with a pattern: the known crash in the library reads freed memory, and
            # reading the pattern faults where stale data might pass. It does not make every such read
            # fault (freed chunks are soon reused; a stricter allocator made rows that had applied live
            # crash on reload instead), so the crash tests accept both outcomes (docs/upstream/README.md).
            "MALLOC_PERTURB_": "165",
            # A worker whose server died before the worker asked the kernel to kill it along exits at once.
            PARENT_ENV: str(os.getpid()),
            NICE_ENV: str(self.nice),
            IDLE_ENV: str(self.idle_seconds),
            "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p),
        }
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collab_server.crdt.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
            # Its own session: a Ctrl-C in the terminal reaches the server, which saves its rooms
            # through the workers, not the workers themselves. A server that dies closes the pipe, and
            # the worker exits on the end of its input.
            start_new_session=True,
        )
        self._cpu_clock = _cpu_clock_of(self._process.pid)
        self._stderr_task = asyncio.get_running_loop().create_task(self._log_stderr())
        try:
            hello, strings = await asyncio.wait_for(self._read_frame(), timeout)
        except (TimeoutError, WorkerDied) as exc:
            await self.kill()
            raise WorkerDied(f"CRDT worker {self.index} did not start: {exc!r}") from exc
        if hello != READY or strings:
            await self.kill()
            raise WorkerDied(f"CRDT worker {self.index} greeted with {hello[:40]!r}")

    async def request(self, frame: Sequence[bytes | bytearray]) -> Answer:
        """Send one request frame (its buffers, in order: ``codec.FrameWriter``) and return its answer's
        body and strings sent out of line (``codec``); WorkerDied if it cannot."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise WorkerDied(f"CRDT worker {self.index} is not running")
        try:
            process.stdin.writelines(frame)
            await process.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerDied(f"CRDT worker {self.index}: pipe closed ({exc})") from exc
        return await self._read_frame()

    async def _read_frame(self) -> Answer:
        process = self._process
        assert process is not None and process.stdout is not None
        stdout = process.stdout
        try:
            body = await _read_exactly(stdout, int.from_bytes(await stdout.readexactly(HEADER), "little"))
            count = int.from_bytes(await stdout.readexactly(HEADER), "little")
            if count > MAX_OUT_OF_LINE:
                raise CodecError(f"an answer announcing {count} strings")
            lengths = struct.unpack(f"<{count}I", await stdout.readexactly(count * HEADER))
            return body, [await _read_exactly(stdout, length) for length in lengths]
        except (asyncio.IncompleteReadError, ConnectionError, CodecError) as exc:
            raise WorkerDied(f"CRDT worker {self.index} exited ({self.exit_status()})") from exc

    def exit_status(self) -> str:
        code = self._process.returncode if self._process else None
        if code is None:
            return "running"
        return f"signal {-code}" if code < 0 else f"exit code {code}"

    async def kill(self) -> None:
        """Kill the process (it may be stuck inside native code: SIGKILL, not a polite request)."""
        process, self._process = self._process, None
        self._cpu_clock = None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stderr_task, 1.0)

    async def _log_stderr(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        # One record per panic (collab_server.native: rate-limited, counted, no build paths).
        report = NativeReport(source=f"CRDT worker {self.index}")
        while True:
            try:
                raw = await process.stderr.readline()
            except (ValueError, ConnectionError):  # a line past the limit, or the pipe broke
                continue
            if not raw:
                return
            report.line(raw.decode("utf-8", "replace").rstrip("\n"))
