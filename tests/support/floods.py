"""Tools for the flood tests (bounds, issue 8): a sentinel in another room, the server's memory, raw sockets.

A sentinel is a plain websocket client in a room of its own that keeps doing sync step1 round trips while
an attack runs: if the attack holds the event loop, the sentinel's slowest round trip shows it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.support.hostile import WORKER_STEP1, room_on_other_worker
from tests.support.servers import ServerProcess

SENTINEL_LIMIT = 0.25
"""Seconds: the sentinel round trip allowed during any attack."""
SCHEDULER_ALLOWANCE = 1.0
"""Seconds: a few round trips (one, or 5 % of them) may take up to this long. The suite runs on machines
shared with other work (two cores, load average near 8 while these tests were written): a process that
is descheduled looks like a stall, and a test that failed on it would fail at random. A stall of our
making is not a blip: without the yield inside a frame, the 20,000-update frame holds every room for
2 s, and fails this."""


async def close_code(ws: ClientConnection, timeout: float = 15.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    received = closed.value.rcvd
    assert received is not None, "connection dropped without a close frame"
    return received.code, received.reason


async def round_trip(ws: ClientConnection) -> float:
    """Seconds from sending a sync step1 that the room's worker answers (``WORKER_STEP1``) to receiving its
    step2."""
    started = time.perf_counter()
    await ws.send(WORKER_STEP1)
    while True:
        reply = await asyncio.wait_for(ws.recv(decode=False), 10)
        if reply[:2] == b"\x00\x01":
            return time.perf_counter() - started


@dataclass
class Sentinel:
    """Round trips in its own room, every few milliseconds, for as long as ``watching`` runs."""

    server: ServerProcess
    room: str
    times: list[float] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[Sentinel]:
        async with connect(f"{self.server.url}/{self.room}", max_size=None) as ws:
            await asyncio.wait_for(ws.recv(), 10)  # the server's step1: the room is loaded
            self.times.append(await round_trip(ws))
            stop = asyncio.Event()

            async def loop() -> None:
                while not stop.is_set():
                    self.times.append(await round_trip(ws))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.01)

            task = asyncio.create_task(loop())
            try:
                yield self
            finally:
                stop.set()
                await task

    @property
    def slowest(self) -> float:
        return max(self.times)

    def assert_served(self) -> None:
        assert len(self.times) >= 2, "the sentinel made no round trip during the attack"
        slow = sorted(t for t in self.times if t >= SENTINEL_LIMIT)
        shown = ", ".join(f"{t * 1000:.0f} ms" for t in slow)
        blips = max(1, len(self.times) // 20)
        assert len(slow) <= blips and self.slowest < SCHEDULER_ALLOWANCE, (
            f"sentinel round trips took {shown} (of {len(self.times)})"
        )


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass  # the process is gone (a CRDT worker restarting)
    return 0


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children.extend(int(child) for child in listed.read().split())
    except OSError:
        pass
    return children


def rss_bytes(server: ServerProcess) -> int:
    """The resident memory of the server process and its CRDT worker processes, now."""
    assert server.process is not None
    pid = server.process.pid
    return _rss(pid) + sum(_rss(child) for child in _children(pid))


@dataclass
class PeakMemory:
    """Samples the server's RSS every 20 ms while ``sampling`` runs: the baseline and the peak."""

    server: ServerProcess
    baseline: int = 0
    peak: int = 0

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[PeakMemory]:
        self.baseline = self.peak = rss_bytes(self.server)
        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                self.peak = max(self.peak, rss_bytes(self.server))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            stop.set()
            await task
            self.peak = max(self.peak, rss_bytes(self.server))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def report(self, what: str) -> str:
        line = f"{what}: RSS {self.baseline / 2**20:.0f} MiB -> peak {self.peak / 2**20:.0f} MiB"
        print(line)  # shown with -s; the figures in docs/hostile-input.md come from these lines
        return line


# -- raw websocket clients (what the websockets library would not let a client do) ----------------------


def upgrade_request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_raw_websocket(server: ServerProcess, path: str, *, receive_buffer: int | None = None) -> socket.socket:
    """A blocking socket through the opening handshake (the 101 read), nothing else read."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(upgrade_request(server.port, path))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client-to-server frame (payload under 126 bytes)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


OP_PING = 0x9


CRDT_WORKERS = 2
"""The flood servers' CRDT workers: a sentinel sits on the worker its attacker's room is not on."""


def sentinel_room(room: str) -> str:
    """A room for a sentinel: not ``room``, and on another CRDT worker (rooms on one worker share its
    queue, by design; the promise is for the others)."""
    return room_on_other_worker(room, CRDT_WORKERS)


def hostile_server(directory: os.PathLike[str], **settings: str) -> ServerProcess:
    """A started server on SQLite in ``directory`` with ``COLLAB_<NAME>`` = value for each setting."""
    env = {
        "COLLAB_DATABASE_URL": f"sqlite:///{os.fspath(directory)}/collab.sqlite3",
        "COLLAB_ROOM_GRACE": "0.5",
        "COLLAB_CRDT_WORKERS": str(CRDT_WORKERS),
    }
    env.update({f"COLLAB_{name.upper()}": value for name, value in settings.items()})
    server = ServerProcess(env=env, log_path=Path(directory) / "server.log")
    return server.start()


def assert_no_traceback(server: ServerProcess) -> None:
    """Client-caused errors are one log line each, never a traceback."""
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "panicked at /" not in log, "raw panic text on stderr"
