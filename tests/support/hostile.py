"""Hostile inputs for the CRDT library (issue 8) and the probes that watch the server while they land.

The payloads are the exact ones found by fuzzing pycrdt 0.14.13 / yrs 0.28.0: a plain ``Doc.apply_update``
of them segfaults (``CRASH``), never returns (``HANG``), panics (``PANIC``), or fails part-way after
committing part of the update (``PARTIAL``, applied after ``PARTIAL_BASE``). Never apply ``CRASH`` or
``HANG`` in the test process: only a server's CRDT worker, or a subprocess, may.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection, connect

from collab_server.crdt.pool import lane_of
from collab_server.protocol import encode_sync_step1, encode_update
from tests.support.eventually import eventually

# A sync step1 that the room's CRDT worker answers. An empty state vector would not do: while a room is
# unchanged the server answers that from memory (collab_server/crdt/fresh_sync.py), and the sentinels and
# probes here are there to wait behind the room's worker. This one claims to hold client 1 up to clock 0,
# i.e. nothing, so its answer is still the whole document.
WORKER_STEP1 = encode_sync_step1(b"\x01\x01\x00")

CRASH = [
    bytes.fromhex(h)
    for h in """
010190b7cb9b0a092801016d026b33017800
0101c8f192e0030108010161017c4260000000
0101bfe987c9060008010161017c41d0000000
0107b3cb8dca020007010161020400b3cb8dca0200066e657374656487b3cb8dca0200020400b3cb8dca0207066e657374656488b3cb8dca0207017c42a600002701016d03737562012800b3cb8dca020f0178017c3f80000000
0102b3a6f7240007010161020400b3a6f72400066e657374656400
0102c8f192e0030287c8f192e00301020400c8f192e00302066e657374656400
0102a5828daf0d0007010161020400a58daf0d00066e657374656400
010790b7cb9b0a000701016102040090b7cb9b0a00066e65737465642101016d037375627f0100012801016d026b330178a790b7cb9b0a0701280090b7cb9b0a0a0178017c3f8001000190b7cb9b0a010702
""".split()
]
HANG = [
    bytes.fromhex(h)
    for h in """
0102c2dfd2de020b2701016d03737562012800c2dfd2de020b0178017c3f80000000
0101c2dfd2de020a00080161017c42aa400000
0104d7afcade0c002701016d03737562012800d7afcade0c000178017c3f80000008010161017c429a00002801016d026b3001760101617c3f80000000
0103b7ebf1dc020008010161017c41e000002701016d03737562012800b7ebf1dc02010178017c3f80000000
""".split()
]
PANIC = [
    bytes.fromhex(
        "0102c6b98d9a00ffffffffff0f0401056e6f7465730568c3a96c6c2801016d026b310175027c3f8000007c4000000000"
    )
]
# Client 1 inserts "ab" into Y.Text "t"; then one update with two clients: client 5 appends "z" to "t"
# (fine), client 2 inserts an item whose parent is the string item 1#0 ("block parent must be deleted or
# shared ref type"). Yrs raises RuntimeError *after* integrating client 5's "z": a partial commit.
PARTIAL_BASE = bytes.fromhex("010101000401017402616200")
PARTIAL = [PARTIAL_BASE, bytes.fromhex("0201050004010174017a01020004000100017800")]


def room_on_other_worker(room: str, workers: int, prefix: str = "sentinel") -> str:
    """A room name whose CRDT worker is not ``room``'s."""
    for i in range(1000):
        candidate = f"{prefix}-{room}-{i}"
        if lane_of(candidate, workers) != lane_of(room, workers):
            return candidate
    raise AssertionError("no room name on another worker")


async def recv_until(ws: ClientConnection, prefix: bytes, timeout: float = 5.0) -> bytes:
    """The next message starting with ``prefix`` (others skipped)."""
    while True:
        message = await asyncio.wait_for(ws.recv(decode=False), timeout)
        if message.startswith(prefix):
            return message


async def send_updates(url: str, updates: list[bytes]) -> tuple[int, str]:
    """Send each update as its own frame from a raw peer; return the close code and reason it gets."""
    async with connect(url, max_size=None) as ws:
        await recv_until(ws, b"\x00\x00")  # the server's step1: the room is loaded
        for update in updates:
            await ws.send(encode_update(update))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None, "connection dropped without a close frame"
            return closed.rcvd.code, closed.rcvd.reason


@dataclass
class Sentinel:
    """Step1 round trips in another room, back to back, for as long as an episode lasts."""

    url: str
    round_trips: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.round_trips, default=float("inf"))

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with connect(self.url) as ws:
                await recv_until(ws, b"\x00\x00")
                while not stop.is_set():
                    started = time.perf_counter()
                    await ws.send(WORKER_STEP1)
                    await recv_until(ws, b"\x00\x01")
                    self.round_trips.append(time.perf_counter() - started)
                    await asyncio.sleep(0.01)
        except Exception as exc:  # reported by the test, which fails on it
            self.failures.append(repr(exc))


@contextlib.asynccontextmanager
async def watching(url: str) -> AsyncIterator[Sentinel]:
    """Run a Sentinel on ``url`` while the body runs: from its first round trip to one after the body."""
    sentinel = Sentinel(url)
    stop = asyncio.Event()
    task = asyncio.create_task(sentinel.run(stop))

    async def round_trips(count: int) -> None:
        async def done() -> None:
            assert len(sentinel.round_trips) >= count or task.done()

        await eventually(done, timeout=10)

    try:
        await round_trips(1)
        yield sentinel
        await round_trips(len(sentinel.round_trips) + 1)
    finally:
        stop.set()
        await task


def loads_in_a_subprocess(updates: list[bytes], timeout: float = 10.0) -> bool:
    """True if plain pycrdt applies ``updates`` in a fresh process without crashing or hanging."""
    script = (
        "import sys\nfrom pycrdt import Doc\nd = Doc()\n"
        "for line in sys.stdin.read().split():\n    d.apply_update(bytes.fromhex(line))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            input="\n".join(u.hex() for u in updates).encode(),
            capture_output=True,
            timeout=timeout,
            env={"RUST_BACKTRACE": "0", "PATH": ""},
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0
