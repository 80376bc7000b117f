"""Arriving connections start their app a few dozen per loop turn (the join gate, ``transport.TurnGate``):
a burst of arrivals still gets every client in, synced, in one piece, and a client that leaves before its
turn costs nothing once it is gone."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from websockets.asyncio.client import ClientConnection, connect

from collab_server.protocol import encode_sync_step1
from tests.support.eventually import eventually
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e

STAYING = 200
LEAVING = 200


async def _metric(server: ServerProcess, sample: str) -> float:
    return await asyncio.to_thread(server.metric, sample, 0.0)


async def _synced(ws: ClientConnection) -> None:
    await ws.send(encode_sync_step1(b"\x00"))
    while (await asyncio.wait_for(ws.recv(decode=False), 30))[:2] != b"\x00\x01":
        pass


async def _upgrade_and_vanish(server: ServerProcess, path: str) -> None:
    """Send a complete upgrade request, then reset the connection without reading the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    writer.transport.abort()


async def test_a_burst_of_arrivals_all_get_in_and_the_ones_that_vanished_leave_nothing(
    server: ServerProcess, room_name: str
) -> None:
    connections_before = await _metric(server, "collab_connections")
    admitted_before = await _metric(server, "collab_connections_admitted")
    url = f"{server.url}/{room_name}"
    arriving = [connect(url) for _ in range(STAYING)]
    vanishing = [_upgrade_and_vanish(server, f"/ws/{room_name}") for _ in range(LEAVING)]
    # Interleaved and at once: the server sees both kinds in the same polls.
    outcomes = await asyncio.gather(*(item for pair in zip(arriving, vanishing, strict=True) for item in pair))
    staying = [ws for ws in outcomes if isinstance(ws, ClientConnection)]
    assert len(staying) == STAYING
    try:
        await asyncio.gather(*(_synced(ws) for ws in staying))

        async def only_the_staying_count() -> None:
            assert await _metric(server, "collab_connections") == connections_before + STAYING
            assert await _metric(server, "collab_connections_admitted") == admitted_before + STAYING

        await eventually(only_the_staying_count)
    finally:
        await asyncio.gather(*(ws.close() for ws in staying))

    async def all_gone() -> None:
        assert await _metric(server, "collab_connections") == connections_before
        assert await _metric(server, "collab_connections_admitted") == admitted_before

    await eventually(all_gone)
