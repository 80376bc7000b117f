"""Once a peer has joined, its connection holds no task while it is idle (``collab_server.session``): the
endpoint's task ends, frames are handled in the read callback, and a short task runs only while something
waits for the session (a frame past the turn budget or a rate pause, the disconnect, the shutdown). Those
tasks, and the app of each arriving connection, start a few dozen per loop turn (``transport.TurnGate``):
bursts of arrivals and departures still get every client in, and out, in one piece."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    decode_awareness,
    decode_frame,
    encode_awareness_message,
    encode_sync_step1,
    encode_update,
)
from tests.support.documents import typing_updates
from tests.support.eventually import eventually
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e

PEERS = 60
ROOMS = 6
ARRIVING_STAYING = 200
ARRIVING_VANISHING = 200


async def _metric(server: ServerProcess, sample: str) -> float:
    return await asyncio.to_thread(server.metric, sample, 0.0)


async def _synced(ws: ClientConnection) -> None:
    """Sync like a fresh provider: step1 with an empty state vector, until the server's step2 comes."""
    await ws.send(encode_sync_step1(b"\x00"))
    while (await asyncio.wait_for(ws.recv(decode=False), 30))[:2] != b"\x00\x01":
        pass


async def _upgrade_and_vanish(server: ServerProcess, path: str) -> None:
    """Send a complete upgrade request, then reset the connection without reading the answer."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    writer.transport.abort()


async def _received(ws: ClientConnection, part: bytes) -> None:
    while part not in await asyncio.wait_for(ws.recv(decode=False), 30):
        pass


async def test_idle_peers_hold_no_task_still_take_part_and_leave_nothing_behind(
    server: ServerProcess, room_name: str
) -> None:
    tasks_before = await _metric(server, "collab_loop_tasks")
    peers_before = await _metric(server, "collab_connections")
    _, updates = typing_updates(1)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect(f"{server.url}/{room_name}-{i % ROOMS}")) for i in range(PEERS)
        ]
        await asyncio.gather(*(_synced(ws) for ws in sockets))

        async def all_joined() -> None:
            assert await _metric(server, "collab_connections") == peers_before + PEERS

        await eventually(all_joined)
        # Each connection kept its endpoint's task before: that would be PEERS more.
        assert await _metric(server, "collab_loop_tasks") - tasks_before < PEERS / 4

        # An idle peer still takes part: its update reaches the others in its room, and theirs reach it.
        first, second = sockets[0], sockets[ROOMS]  # both in room 0
        await first.send(encode_update(updates[0]))
        await _received(second, b"0,")
        await second.send(encode_sync_step1(b"\x00"))
        await _received(second, b"0,")

    async def all_left() -> None:
        assert await _metric(server, "collab_connections") == peers_before
        # The sessions that ran for the disconnects are over too: nothing is left running per connection.
        assert await _metric(server, "collab_loop_tasks") - tasks_before < PEERS / 4

    await eventually(all_left)


async def test_a_peer_that_disconnects_mid_burst_leaves_its_room(server_factory: Any, room_name: str) -> None:
    """With a budget of 10 µs a turn, every frame goes to a session task; the client's abort arrives behind
    the queued frames, and the session ends there: the peer leaves, its admission is given back."""
    server: ServerProcess = server_factory({"COLLAB_TURN_BUDGET_MS": "0.01", "COLLAB_MAX_CONNECTIONS_PER_ADDRESS": "1"})
    _, updates = typing_updates(400)
    frames = [b"".join(encode_update(u) for u in updates[i : i + 20]) for i in range(0, len(updates), 20)]
    for _ in range(3):  # one connection per address at a time: each round needs the last one's admission back
        async with connect(f"{server.url}/{room_name}") as ws:
            await _synced(ws)
            for frame in frames:
                await ws.send(frame)
            ws.transport.abort()

        async def left() -> None:
            assert await _metric(server, "collab_connections") == 0

        await eventually(left)
    async with connect(f"{server.url}/{room_name}") as ws:
        await _synced(ws)
    assert await _metric(server, "collab_frames_in_task_total") > 0


async def test_peers_that_drop_at_once_all_leave_and_the_others_see_them_go(
    server: ServerProcess, room_name: str
) -> None:
    """Lost connections end their sessions a few dozen per loop turn (``transport.TurnGate``): every one
    of a burst still leaves its room, its awareness removal reaches the peer that stays, and its admission
    is given back."""
    dropped = 150
    peers_before = await _metric(server, "collab_connections")
    admitted_before = await _metric(server, "collab_connections_admitted")
    url = f"{server.url}/{room_name}"
    async with connect(url) as watcher:
        await _synced(watcher)
        leaving = [await connect(url) for _ in range(dropped)]
        await asyncio.gather(*(_synced(ws) for ws in leaving))
        clients = {5000 + i for i in range(dropped)}
        for client, ws in zip(sorted(clients), leaving, strict=True):
            await ws.send(encode_awareness_message([AwarenessEntry(client, 1, '{"user":"leaving"}')]))

        async def watch(until: Any) -> set[int]:
            """Clients the watcher's awareness messages name, read until ``until`` of them is true."""
            seen: dict[int, str] = {}
            while not until(seen):
                for message in decode_frame(await asyncio.wait_for(watcher.recv(decode=False), 30)):
                    if isinstance(message, AwarenessMessage):
                        seen.update((entry.client_id, entry.state) for entry in decode_awareness(message.update))
            return {client for client, state in seen.items() if state == "null"}

        await watch(lambda seen: clients <= seen.keys())  # all of them are in the room
        for ws in leaving:
            ws.transport.abort()  # all at once, like a network that went away
        gone = await watch(lambda seen: clients <= {c for c, state in seen.items() if state == "null"})
        assert gone >= clients

        async def all_left() -> None:
            assert await _metric(server, "collab_connections") == peers_before + 1
            assert await _metric(server, "collab_connections_admitted") == admitted_before + 1

        await eventually(all_left)
        # The one that stayed is still served.
        await watcher.send(encode_sync_step1(b"\x00"))
        while (await asyncio.wait_for(watcher.recv(decode=False), 30))[:2] != b"\x00\x01":
            pass


async def test_a_burst_of_arrivals_all_get_in_and_the_ones_that_vanished_leave_nothing(
    server: ServerProcess, room_name: str
) -> None:
    connections_before = await _metric(server, "collab_connections")
    admitted_before = await _metric(server, "collab_connections_admitted")
    url = f"{server.url}/{room_name}"
    arriving = [connect(url) for _ in range(ARRIVING_STAYING)]
    vanishing = [_upgrade_and_vanish(server, f"/ws/{room_name}") for _ in range(ARRIVING_VANISHING)]
    # Interleaved and at once: the server sees both kinds in the same polls.
    outcomes = await asyncio.gather(*(item for pair in zip(arriving, vanishing, strict=True) for item in pair))
    staying = [ws for ws in outcomes if isinstance(ws, ClientConnection)]
    assert len(staying) == ARRIVING_STAYING
    try:
        await asyncio.gather(*(_synced(ws) for ws in staying))

        async def only_the_staying_count() -> None:
            assert await _metric(server, "collab_connections") == connections_before + ARRIVING_STAYING
            assert await _metric(server, "collab_connections_admitted") == admitted_before + ARRIVING_STAYING

        await eventually(only_the_staying_count)
    finally:
        await asyncio.gather(*(ws.close() for ws in staying))

    async def all_gone() -> None:
        assert await _metric(server, "collab_connections") == connections_before
        assert await _metric(server, "collab_connections_admitted") == admitted_before

    await eventually(all_gone)
