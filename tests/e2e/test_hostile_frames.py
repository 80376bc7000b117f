"""Frames built to freeze the server: each is refused or answered within bounds, and other rooms keep
serving (a sentinel's step1 round trip stays under 250 ms) with the server's memory bounded.

Payloads as in issue 8: 5,000 sync step1s in one frame against a 3 MB document, 32 MiB of
query-awareness in one frame, and a frame of 20,000 updates (a frame the message cap allows here, to
show that handling yields inside a frame).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pycrdt import Doc, Text, write_var_uint
from websockets.asyncio.client import connect

from collab_server.crdt.pool import lane_of
from collab_server.protocol import (
    AwarenessEntry,
    encode_awareness_message,
    encode_query_awareness,
    encode_sync_step1,
    encode_update,
)
from tests.support.documents import typing_updates
from tests.support.floods import (
    CRDT_WORKERS,
    SENTINEL_LIMIT,
    PeakMemory,
    Sentinel,
    assert_no_traceback,
    close_code,
    hostile_server,
    sentinel_room,
)
from tests.support.servers import ServerProcess

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = hostile_server(
        tmp_path_factory.mktemp("hostile-frames"),
        max_message_bytes=str(40 * MiB),
        # The cap is raised from 512 so that a 20,000-message frame gets through to show yielding.
        max_messages_per_frame="20000",
        peer_messages_burst="100000",
        send_queue_bytes=str(8 * MiB),
        # Folding a 20,000-update log runs pycrdt in a store thread, holding the GIL for hundreds of ms:
        # a cost of compaction (moving to the CRDT worker processes), not of handling the frame.
        compact_updates="1000000",
        compact_bytes=str(1 << 30),
    )
    yield process
    process.stop()


async def _write_document(server: ServerProcess, room: str, nbytes: int) -> None:
    doc: Doc[Any] = Doc()
    doc.get("t", type=Text).insert(0, "x" * nbytes)
    async with connect(f"{server.url}/{room}", max_size=None) as writer:
        await writer.recv()
        await writer.send(encode_update(doc.get_update()))
        await writer.send(encode_sync_step1(b"\x00"))  # answered after the update was applied
        while (await asyncio.wait_for(writer.recv(decode=False), 10))[:2] != b"\x00\x01":
            pass


async def test_5000_step1s_against_a_3mb_document_are_answered_once(server: ServerProcess, room_name: str) -> None:
    await _write_document(server, room_name, 3 * MiB)
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling(), connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()  # the server's step1
        await ws.send(encode_sync_step1(b"\x00") * 5000)  # 20 KB
        step2s = 0
        with pytest.raises(TimeoutError):
            while True:
                reply = await asyncio.wait_for(ws.recv(decode=False), 1.0)
                step2s += reply[:2] == b"\x00\x01"
    memory.report("5,000 step1s on a 3 MB document")
    assert step2s == 1
    sentinel.assert_served()
    assert memory.growth < 64 * MiB  # the one 3 MB reply, not 5,000 of them (15 GB)


async def test_step1s_with_different_state_vectors_are_refused(server: ServerProcess, room_name: str) -> None:
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        vectors = (b"\x01" + write_var_uint(client) + b"\x01" for client in range(1, 5001))
        await ws.send(b"".join(encode_sync_step1(vector) for vector in vectors))
        code, reason = await close_code(ws)
    assert (code, reason) == (4400, "protocol error: frame holds more than 4 different sync step1s")


async def test_32_mib_of_query_awareness_is_refused(server: ServerProcess, room_name: str) -> None:
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling(), connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        await ws.send(encode_query_awareness() * (32 * MiB))
        code, reason = await close_code(ws)
    memory.report("32 MiB of query-awareness in one frame")
    assert (code, reason) == (4400, "protocol error: frame holds more than 20000 messages")
    sentinel.assert_served()
    assert memory.growth < 200 * MiB  # the frame itself, received whole by the websocket layer


async def test_query_awareness_is_answered_once_per_frame(server: ServerProcess, room_name: str) -> None:
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        mine = encode_awareness_message([AwarenessEntry(42, 1, "{}")])
        await ws.send(mine + encode_query_awareness() * 10_000)
        replies = []
        with pytest.raises(TimeoutError):
            while True:
                replies.append(await asyncio.wait_for(ws.recv(decode=False), 1.0))
    # Our own awareness echoed, then one answer to the 10,000 queries.
    assert len(replies) == 2


async def _send_and_sync(server: ServerProcess, room: str, frames: list[bytes]) -> tuple[bytes, float]:
    """Send ``frames`` to ``room``, then a step1: its step2, answered once every frame was applied, and
    how many requests the server made to its CRDT workers meanwhile."""
    async with connect(f"{server.url}/{room}", max_size=None) as ws:
        await ws.recv()  # the room is loaded
        requests = await asyncio.to_thread(server.metric, "collab_crdt_request_seconds_count")
        for frame in frames:
            await ws.send(frame)
        await ws.send(encode_sync_step1(b"\x00"))
        while (reply := await asyncio.wait_for(ws.recv(decode=False), 120))[:2] != b"\x00\x01":
            pass
    requests = await asyncio.to_thread(server.metric, "collab_crdt_request_seconds_count") - requests
    return reply, requests


def _room_on_the_same_worker(room: str, tag: str) -> str:
    for i in range(1000):
        candidate = f"{room}-{tag}-{i}"
        if lane_of(candidate, CRDT_WORKERS) == lane_of(room, CRDT_WORKERS):
            return candidate
    raise AssertionError("no room name on the same worker")


async def _slowest_round_trip(server: ServerProcess, room: str, frames: list[bytes], sentinel_in: str) -> float:
    """The sentinel's slowest round trip while ``frames`` (20,000 appends) are sent to ``room`` and applied."""
    sentinel = Sentinel(server, sentinel_in)
    async with sentinel.watching():
        reply, _ = await _send_and_sync(server, room, frames)
    assert b"19999," in reply
    assert len(sentinel.times) >= 2, "the sentinel made no round trip during the attack"
    return sentinel.slowest


async def test_a_frame_of_20000_updates_yields_to_other_rooms(server: ServerProcess, room_name: str) -> None:
    """The sentinel's slowest round trip while one frame of 20,000 updates is handled, against its
    slowest in the same run while the same updates come in 200 frames of 100 (between which the server
    yields anyway), each to a fresh room on the same worker, twice over. The machine's load shows in
    both; a stall of the frame's making only in the first, and in every attempt, where a scheduler blip
    hits one at most: so the better attempt is judged. Without the yield inside a frame, the sentinel
    waits for the whole frame (2 s on a quiet machine, more on a busy one) in both attempts."""
    _, updates = typing_updates(20_000)
    messages = [encode_update(update) for update in updates]
    in_small_frames = [b"".join(messages[i : i + 100]) for i in range(0, len(messages), 100)]
    in_one_frame = [b"".join(messages)]
    sentinel_in = sentinel_room(room_name)
    baseline: list[float] = []
    attack: list[float] = []
    for attempt in range(2):
        room = _room_on_the_same_worker(room_name, f"small-{attempt}")
        baseline.append(await _slowest_round_trip(server, room, in_small_frames, sentinel_in))
        room = _room_on_the_same_worker(room_name, f"whole-{attempt}")
        attack.append(await _slowest_round_trip(server, room, in_one_frame, sentinel_in))
    shown = ", ".join(f"{t * 1000:.0f} ms" for t in attack)
    print(f"20,000 updates: slowest sentinel round trip {shown} in one frame, baseline {max(baseline) * 1000:.0f} ms")
    limit = max(SENTINEL_LIMIT, 2 * max(baseline))
    assert min(attack) < limit, f"sentinel round trips of {shown} (baseline in the same run: {max(baseline):.3f} s)"


async def test_a_frame_of_20000_updates_reaches_the_worker_in_more_than_one_request(
    server: ServerProcess, room_name: str
) -> None:
    """The yield inside a frame, seen in the server's own counts rather than in timings: updates handled
    in one turn of the event loop go to their CRDT worker as one request, so a frame handled without a
    turn for anything else makes two requests (its updates, then the diff for the step1 after it); with
    the loop given a turn every few milliseconds, the first updates leave before the frame is read to its
    end, and more requests follow. (Unless that first request is still in the worker when the loop has
    read the whole frame: a worker descheduled that long is rare, so up to three fresh rooms are tried;
    without the yield every one of them makes two.)"""
    _, updates = typing_updates(20_000)
    frame = b"".join(encode_update(update) for update in updates)
    counts: list[float] = []
    for attempt in range(3):
        reply, requests = await _send_and_sync(server, f"{room_name}-{attempt}", [frame])
        assert b"19999," in reply
        counts.append(requests)
        if requests >= 3:
            break
    assert max(counts) >= 3, f"requests to the CRDT worker per frame: {counts}"


def test_no_tracebacks_were_logged(server: ServerProcess) -> None:
    assert_no_traceback(server)
