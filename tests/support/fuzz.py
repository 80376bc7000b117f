"""Fuzzed y-websocket frames, and raw clients that throw them at a server (tests/e2e and bench/fuzz.py).

Frames mix valid updates (made with pycrdt here, the way clients make them), mutated updates (bit flips,
truncations, insertions, splices, varint tweaks), step1s with odd state vectors, awareness (valid and
not), query-awareness, random bytes, and the issue's hostile payloads. A client closed by the server
(4400 for a refused update, as expected) reconnects and goes on.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets
from pycrdt import Array, Doc, Map, Text, write_var_uint
from websockets.asyncio.client import connect

from collab_server.protocol import (
    AwarenessEntry,
    Reader,
    encode_awareness_message,
    encode_query_awareness,
    encode_sync_step1,
    encode_update,
)
from tests.support.hostile import CRASH, HANG, PANIC, PARTIAL


def _corpus(seed: int) -> list[bytes]:
    """Valid updates of several shapes from several clients, each an edit as a client would send it."""
    rng = random.Random(seed)
    updates: list[bytes] = []
    for client in range(1, 6):
        doc: Doc[Any] = Doc(client_id=client * 1000 + seed % 1000)
        doc.observe(lambda event: updates.append(event.update))
        text, items, cells = doc.get("text", type=Text), doc.get("array", type=Array), doc.get("map", type=Map)
        for i in range(60):
            choice = rng.random()
            if choice < 0.4:
                text.insert(rng.randint(0, len(text)), rng.choice(["a", "bc", "def", "x" * 40]))
            elif choice < 0.55 and len(text) > 2:
                start = rng.randrange(len(text) - 1)
                del text[start : start + 1]
            elif choice < 0.75:
                items.append(rng.choice([1, "s", None, 2.5, [1, 2], {"k": i}]))
            else:
                cells[f"k{rng.randrange(8)}"] = rng.choice([i, "v", None, True])
    return updates


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        how = rng.random()
        if how < 0.3 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif how < 0.45 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif how < 0.6:
            buf.insert(rng.randint(0, len(buf)), rng.randrange(256))
        elif how < 0.75 and buf:
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        elif how < 0.9:
            cut = rng.randint(0, len(buf))
            buf = buf[:cut] + other[rng.randint(0, len(other)) :]
        elif buf:
            at = rng.randrange(len(buf))
            buf[at : at + 1] = write_var_uint(rng.choice([0, 1, 2**31, 2**53 - 1]))
    return bytes(buf)


class FrameFuzzer:
    """An endless, reproducible stream of frames (``seed``)."""

    def __init__(self, seed: int, *, hostile: bool = True, updates: bool = True) -> None:
        self.rng = random.Random(seed)
        self.corpus = _corpus(seed)
        # The payloads (most of them kill or stall a worker: slow, and covered one by one by
        # tests/e2e/test_hostile_crdt.py); ``updates=False`` sends no update at all (see ``fuzz``).
        self.hostile = [*CRASH, *HANG, *PANIC, *PARTIAL] if hostile else []
        self.updates = updates
        self.kinds: Counter[str] = Counter()

    def message(self) -> bytes:
        rng, corpus = self.rng, self.corpus
        roll = rng.random()
        if not self.updates and roll < 0.65:
            roll = 0.65 + roll * 0.35 / 0.65  # everything but updates
        if roll < 0.35:
            self.kinds["update"] += 1
            return encode_update(rng.choice(corpus))
        if roll < 0.65:
            self.kinds["mutated update"] += 1
            return encode_update(mutate(rng, rng.choice(corpus), rng.choice(corpus)))
        if roll < 0.73:
            self.kinds["step1"] += 1
            vector = write_var_uint(1) + write_var_uint(rng.randrange(2**32)) + write_var_uint(rng.randrange(99))
            return encode_sync_step1(mutate(rng, vector, b"") if rng.random() < 0.5 else vector)
        if roll < 0.83:
            self.kinds["awareness"] += 1
            state = json.dumps({"user": {"name": "fuzz", "n": rng.randrange(99)}}) if rng.random() < 0.7 else "{"
            entry = AwarenessEntry(rng.randrange(1, 2**32), rng.randrange(1, 9), state)
            return encode_awareness_message([entry])
        if roll < 0.88:
            self.kinds["query awareness"] += 1
            return encode_query_awareness()
        if roll < 0.98 or not self.hostile:
            self.kinds["random bytes"] += 1
            return rng.randbytes(rng.randint(1, 64))
        self.kinds["hostile payload"] += 1
        return encode_update(rng.choice(self.hostile))

    def frame(self) -> bytes:
        # Mostly one message per frame, sometimes several (a frame may carry any number).
        return b"".join(self.message() for _ in range(1 if self.rng.random() < 0.9 else self.rng.randint(2, 4)))


@dataclass
class FuzzRun:
    frames: int = 0
    """Frames sent."""
    handled: int = 0
    """Frames the server certainly read: the round trip after it was answered, or the server closed the
    connection in answer to it (it was refused)."""
    connections: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)


async def _confirm(ws: Any, state_vector: bytes, run: FuzzRun, step1s: int) -> None:
    """Wait until the frame just sent was handled: a round trip after every frame. Most fuzzed frames
    are refused and the server closes the connection at the first refused one, so frames sent in a burst
    after it would never be read (with a round trip every 10 frames, most of them were not).

    Our step1's answer is the last of ``step1s + 1`` step2s: the frame's own step1s (each answered, or
    the connection closed) come first. With the room's state vector as of our arrival, each answer is
    only what changed since."""
    await ws.send(encode_sync_step1(state_vector))
    answers = 0
    try:
        while answers <= step1s:
            answers += (await asyncio.wait_for(ws.recv(decode=False), 30)).startswith(b"\x00\x01")
    except websockets.ConnectionClosed as closed:
        if closed.rcvd is not None:
            run.handled += 1  # the server's answer to it was to close
        raise
    run.handled += 1


async def fuzz(
    url: str,
    rooms: list[str],
    *,
    frames: int,
    clients: int,
    seed: int,
    hostile: bool = True,
    read_only: frozenset[str] = frozenset(),
    run: FuzzRun | None = None,
    until: float = math.inf,
) -> FuzzRun:
    """Send ``frames`` fuzzed frames from ``clients`` raw connections spread over ``rooms``.

    Each client keeps to its own share of the rooms (one room each when there are at least as many
    clients as rooms): a room whose CRDT worker is restarting holds up only the clients in it. With
    every client free to pick any room, all of them ended up waiting in the restarting worker's rooms
    within a second, and the whole run stood still for every restart (bench/fuzz.py, issue 8).

    Rooms in ``read_only`` get every kind of frame except updates. A room where anyone may write can be
    *trapped*: updates that are each accepted, after which a legitimate edit makes the CRDT library loop
    (the issue's hang payload is such a sequence). Until the library is fixed, the server can only refuse
    the edit that sprang the trap, so a real client's room is fuzzed without updates.

    ``run`` is filled in as frames go (a caller may report progress from it); no frame is sent after
    ``until`` (``time.monotonic()``).
    """
    run = run if run is not None else FuzzRun()
    budget = iter(range(frames))

    async def client(index: int) -> None:
        fuzzers = {
            writable: FrameFuzzer(seed * 100 + index, hostile=hostile, updates=writable) for writable in (True, False)
        }
        rng = random.Random(seed * 100 + index)
        mine = rooms[index::clients] if clients < len(rooms) else [rooms[index % len(rooms)]]
        # ``until`` is checked here too: a client whose room cannot be joined (its worker restarting
        # again and again) never reaches the frame loop below, and would keep the run from ending.
        while time.monotonic() < until:
            room = rng.choice(mine)
            fuzzer = fuzzers[room not in read_only]
            try:
                async with connect(f"{url}/{room}", max_size=None, open_timeout=10) as ws:
                    run.connections += 1
                    welcome = await asyncio.wait_for(ws.recv(decode=False), 30)  # the server's step1
                    state_vector = Reader(welcome[2:]).var_bytes()
                    for _ in range(rng.randint(1, 200)):
                        if next(budget, None) is None or time.monotonic() >= until:
                            await ws.close()
                            return
                        step1s = fuzzer.kinds["step1"]
                        await ws.send(fuzzer.frame())
                        run.frames += 1
                        await _confirm(ws, state_vector, run, fuzzer.kinds["step1"] - step1s)
                    await ws.close()
                    run.close_codes[ws.close_code or 1006] += 1
            except websockets.ConnectionClosed as closed:
                run.close_codes[closed.rcvd.code if closed.rcvd else 1006] += 1
            except (OSError, TimeoutError):
                run.close_codes[0] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return run
