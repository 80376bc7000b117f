"""Awareness built to exhaust memory or break other clients: refused with the right code, bounded, and the
real clients in the room keep collaborating.

Payloads as in issue 8: 1.5 M new client ids in one message (13 MiB frame) and in messages of 5,000,
states holding NaN or Infinity, JSON nested 100,000 deep; and peers filling a room's awareness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    decode_awareness,
    decode_frame,
    encode_awareness_message,
)
from tests.support.eventually import eventually
from tests.support.floods import PeakMemory, Sentinel, assert_no_traceback, close_code, hostile_server, sentinel_room
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = hostile_server(tmp_path_factory.mktemp("hostile-awareness"), max_message_bytes=str(16 * MiB))
    yield process
    process.stop()


def _states(first: int, count: int, state: str = '{"u":1}') -> bytes:
    return encode_awareness_message([AwarenessEntry(first + i, 1, state) for i in range(count)])


async def test_one_and_a_half_million_ids_in_one_message_are_refused(server: ServerProcess, room_name: str) -> None:
    frame = _states(1 << 30, 1_500_000, "{}")  # random-looking 31-bit ids, as clients make them
    assert len(frame) > 12 * MiB
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling(), connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        await ws.send(frame)
        code, reason = await close_code(ws)
    memory.report("1.5 M awareness ids in one message")
    assert code == 4400
    assert reason == "protocol error: awareness message carries 1500000 client states, more than 5000"
    sentinel.assert_served()
    assert memory.growth < 100 * MiB


async def test_one_and_a_half_million_ids_in_messages_of_5000_are_refused(
    server: ServerProcess, room_name: str
) -> None:
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling(), connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        # The first message is refused already; the rest of the 1.5 M is never read. (Sending all 300
        # before reading would only race the server's close against the client's own backlog.)
        for batch in range(3):
            await ws.send(_states(1 + batch * 5000, 5000))
        code, reason = await close_code(ws)
    memory.report("1.5 M awareness ids, 5,000 per message")
    assert (code, reason) == (4400, "protocol error: one connection may bring at most 16 awareness clients")
    sentinel.assert_served()
    assert memory.growth < 100 * MiB


async def test_a_room_holds_at_most_its_limit_of_awareness_states(server_factory: Any, room_name: str) -> None:
    server: ServerProcess = server_factory({"COLLAB_MAX_AWARENESS_STATES": "40"})
    async with connect(f"{server.url}/{room_name}") as first, connect(f"{server.url}/{room_name}") as second:
        for number, ws in enumerate((first, second)):
            await ws.recv()
            await ws.send(_states(1000 * (number + 1), 16))
            await ws.recv()  # the room's relay of our states: applied
        async with connect(f"{server.url}/{room_name}") as third:
            await third.recv()
            await third.send(_states(3000, 16))
            code, reason = await close_code(third)
        assert (code, reason) == (4503, "the room already holds 40 awareness states")
        # Those who came first keep their states; a newcomer is shown them, not the refused peer's.
        async with connect(f"{server.url}/{room_name}", max_size=None) as fresh:
            awareness = await asyncio.wait_for(fresh.recv(decode=False), 5)
            while awareness[:1] != b"\x01":
                awareness = await asyncio.wait_for(fresh.recv(decode=False), 5)
            [shown] = decode_frame(awareness)
            assert isinstance(shown, AwarenessMessage)
            ids = {entry.client_id for entry in decode_awareness(shown.update)}
            assert ids == set(range(1000, 1016)) | set(range(2000, 2016))
    assert server.metric('collab_quota_refusals_total{quota="awareness_full"}') == 1


@pytest.mark.parametrize("state", ['{"cursor": {"x": NaN}}', '{"x": Infinity}', '[-Infinity]'])
async def test_nan_and_infinity_never_reach_other_clients(
    node: YjsNode, server: ServerProcess, room_name: str, state: str
) -> None:
    a = await node.connect(server.url, room_name)
    b = await node.connect(server.url, room_name)
    await a.wait_synced()
    await b.wait_synced()
    async with connect(f"{server.url}/{room_name}") as bad:
        await bad.recv()
        await bad.send(encode_awareness_message([AwarenessEntry(999, 1, state)]))
        code, reason = await close_code(bad)
    assert code == 4400
    assert "which JSON does not allow" in reason
    # y-websocket clients that received NaN would throw in JSON.parse and stop syncing.
    await a.insert_text(0, "still syncing")

    async def arrived() -> None:
        assert await b.text() == "still syncing"
        assert 999 not in await b.awareness()

    await eventually(arrived)


async def test_json_nested_100000_deep_is_refused_without_a_traceback(server: ServerProcess, room_name: str) -> None:
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling(), connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        await ws.send(encode_awareness_message([AwarenessEntry(7, 1, "[" * 100_000 + "]" * 100_000)]))
        code, reason = await close_code(ws)
    memory.report("awareness JSON nested 100,000 deep")
    assert code == 4400
    assert reason in {
        "protocol error: awareness state of client 7 is nested deeper than 64 levels",
        "protocol error: awareness state of client 7 is 200000 bytes, more than 65536",
    }
    async with connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        await ws.send(encode_awareness_message([AwarenessEntry(7, 1, "[" * 30_000)]))
        code, reason = await close_code(ws)
    assert (code, reason) == (4400, "protocol error: awareness state of client 7 is nested deeper than 64 levels")
    sentinel.assert_served()
    assert_no_traceback(server)
