"""Rates and quotas: a peer past one is closed with a transient code (the y-websocket client retries later)
and counted; others carry on. (That a tldraw client at 60 fps stays far inside the default rates is
shown in tests/unit/test_limits.py, on a simulated clock.)"""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from collab_server.protocol import (
    SyncStep2,
    decode_frame,
    encode_query_awareness,
    encode_sync_step1,
    encode_update,
)
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.support.floods import Sentinel, close_code, sentinel_room
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e


async def test_too_many_messages_per_second_is_refused_with_4529(server_factory: Any, room_name: str) -> None:
    server: ServerProcess = server_factory(
        {
            "COLLAB_PEER_MESSAGES_PER_SECOND": "50",
            "COLLAB_PEER_MESSAGES_BURST": "200",
            "COLLAB_PEER_RATE_PATIENCE": "1",
            "COLLAB_CRDT_WORKERS": "2",
        }
    )
    sentinel = Sentinel(server, sentinel_room(room_name))
    async with sentinel.watching(), connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        for _ in range(1000):
            await ws.send(encode_query_awareness())
        code, reason = await close_code(ws)
    assert (code, reason) == (4529, "sending more than 50 messages per second")
    sentinel.assert_served()
    assert server.metric('collab_quota_refusals_total{quota="rate_limited"}') >= 1


async def test_a_short_burst_past_the_rates_is_slowed_not_refused(
    server_factory: Any, node: YjsNode, room_name: str
) -> None:
    server: ServerProcess = server_factory(
        {"COLLAB_PEER_MESSAGES_PER_SECOND": "100", "COLLAB_PEER_MESSAGES_BURST": "100"}
    )
    reader = await node.connect(server.url, room_name)
    await reader.wait_synced()
    doc: Doc[Any] = Doc()
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        for i in range(250):  # 150 past the burst: 1.5 s of slowing, well inside the patience
            await ws.send(encode_update(append_text(doc, f"{i},")))

        async def all_arrived() -> None:
            assert await reader.text("t") == "".join(f"{i}," for i in range(250))

        await eventually(all_arrived, timeout=20)
        await ws.send(encode_query_awareness())  # still open: the server answers
        assert ws.close_code is None
    assert server.metric("collab_peer_slowed_seconds_total") >= 1.0
    assert server.metric('collab_quota_refusals_total{quota="rate_limited"}', 0) == 0


async def test_too_many_bytes_per_second_is_refused_with_4529(server_factory: Any, room_name: str) -> None:
    server: ServerProcess = server_factory(
        {
            "COLLAB_MAX_MESSAGE_BYTES": str(1024 * 1024),
            "COLLAB_PEER_BYTES_BURST": str(1024 * 1024),
            "COLLAB_PEER_BYTES_PER_SECOND": "10000",
            "COLLAB_PEER_RATE_PATIENCE": "1",
        }
    )
    doc: Doc[Any] = Doc()
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        for _ in range(40):  # 40 updates of 60 KB: past the 1 MiB burst
            await ws.send(encode_update(append_text(doc, "x" * 60_000)))
        code, reason = await close_code(ws)
    assert (code, reason) == (4529, "sending faster than 10000 bytes per second")


async def test_a_document_past_its_size_quota_is_refused_with_4513(server_factory: Any, room_name: str) -> None:
    server: ServerProcess = server_factory({"COLLAB_MAX_DOCUMENT_BYTES": "200000"})
    doc: Doc[Any] = Doc()
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        for _ in range(3):
            await ws.send(encode_update(append_text(doc, "a" * 50_000)))
        await ws.send(encode_update(append_text(doc, "b" * 60_000)))
        code, reason = await close_code(ws)
    assert (code, reason) == (4513, "the document would grow past its limit of 200000 bytes")
    assert server.metric('collab_quota_refusals_total{quota="document_too_large"}') == 1
    # What fits stays, and is served.
    async with connect(f"{server.url}/{room_name}", max_size=None) as fresh:
        await fresh.recv()
        await fresh.send(encode_sync_step1(b"\x00"))
        while (reply := await fresh.recv(decode=False))[:2] != b"\x00\x01":
            pass
    [step2] = decode_frame(reply)
    assert isinstance(step2, SyncStep2)
    served: Doc[Any] = Doc()
    served.apply_update(step2.update)
    assert served.get("t", type=Text).to_py() == "a" * 150_000


async def test_rooms_opened_per_minute_from_one_address_are_limited(server_factory: Any, room_name: str) -> None:
    server: ServerProcess = server_factory({"COLLAB_ROOM_LOADS_PER_MINUTE": "5"})
    async with connect(f"{server.url}/{room_name}-0") as first:
        await first.recv()
        for i in range(1, 5):
            async with connect(f"{server.url}/{room_name}-{i}") as ws:
                await ws.recv()
        async with connect(f"{server.url}/{room_name}-5") as sixth:
            code, reason = await close_code(sixth)
        assert (code, reason) == (4529, "opening rooms faster than 5 per minute")
        # Joining a room that is loaded already costs no load: allowed.
        async with connect(f"{server.url}/{room_name}-0") as again:
            assert (await again.recv(decode=False))[:2] == b"\x00\x00"
    assert server.metric('collab_quota_refusals_total{quota="room_loads"}') == 1
