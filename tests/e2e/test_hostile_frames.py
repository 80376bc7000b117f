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

from collab_server.protocol import (
    AwarenessEntry,
    encode_awareness_message,
    encode_query_awareness,
    encode_sync_step1,
    encode_update,
)
from tests.support.documents import typing_updates
from tests.support.floods import PeakMemory, Sentinel, assert_no_traceback, close_code, hostile_server, sentinel_room
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


async def test_a_frame_of_20000_updates_yields_to_other_rooms(server: ServerProcess, room_name: str) -> None:
    _, updates = typing_updates(20_000)
    frame = b"".join(encode_update(update) for update in updates)
    sentinel = Sentinel(server, sentinel_room(room_name))
    async with sentinel.watching(), connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        await ws.send(frame)
        await ws.send(encode_sync_step1(b"\x00"))  # answered once the whole frame is applied
        while (reply := await asyncio.wait_for(ws.recv(decode=False), 30))[:2] != b"\x00\x01":
            pass
    assert b"19999," in reply
    sentinel.assert_served()


def test_no_tracebacks_were_logged(server: ServerProcess) -> None:
    assert_no_traceback(server)
