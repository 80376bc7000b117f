"""The server freezes long-lived objects out of the garbage collector's walks (``collab_server.gc_policy``),
which is only safe while what lives long is freed by reference counts alone: a reference cycle among
frozen objects is never freed. So every kind of connection, once closed, must leave nothing that only the
cyclic collector could free.

Counted in a server with its collector disabled (``tests.support.gc_probe``). Before the two cycles were
broken (the HTTP protocol and its parser; the websocket protocol and the ASGI extension in its scope),
the 160 websocket connections of this test left 7,113 such objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.support.eventually import eventually
from tests.support.servers import REPO, ServerProcess, read_metric
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e

ROUNDS = 40  # connections of each kind
SLACK = 20  # unreachable objects tolerated in all (a cycle per closed connection would be thousands)
# What each websocket connection creates: none may outlive it.
CONNECTION_KINDS = (
    "ServerProtocol",
    "WebSocketConnection",
    "GuardedHTTPProtocol",
    "Peer",
    "PeerSession",
    "FrameReader",
)


@dataclass
class Probe:
    """``tests.support.gc_probe``: a server in its own process whose unreachable objects can be counted."""

    process: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, sample: str) -> float:
        return read_metric(self.http, sample, 0.0)

    async def unreachable(self) -> dict[str, Any]:
        return await self._ask(b"collect")

    async def census(self) -> dict[str, Any]:
        return await self._ask(b"census")

    async def _ask(self, command: bytes) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + b"\n")
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(self.process.stdout.readline(), 30))
        return answer


@pytest.fixture
async def probe(tmp_path: Path) -> AsyncIterator[Probe]:
    env = {
        **os.environ,
        "COLLAB_DATABASE_URL": f"sqlite:///{tmp_path}/collab.sqlite3",
        "COLLAB_ROOM_GRACE": "0.3",
        "COLLAB_LOG_LEVEL": "error",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.gc_probe", cwd=REPO, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        assert ready.startswith(b"ready "), ready
        yield Probe(process, int(ready.split()[1]))
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _held(ws: ClientConnection) -> None:
    """Keep a connection open across a few collect-and-freeze passes, so that its objects are frozen."""
    await ws.recv()
    await asyncio.sleep(0.35)


async def _churn(server: Probe, node: YjsNode, room: str) -> None:
    """Every kind of connection a replica sees, each held long enough to be frozen, then closed."""
    # real clients: sync, an edit, awareness, then a clean close
    clients = [await node.connect(server.url, f"{room}-{i % 4}") for i in range(ROUNDS // 4)]
    for i, client in enumerate(clients):
        await client.wait_synced()
        await client.insert_text(0, f"{i},")
        await client.set_awareness({"user": f"u{i}"})
    await asyncio.sleep(0.35)
    for client in clients:
        await client.destroy()

    async def refused(i: int) -> None:  # a malformed message: refused with 4400 by the server
        async with connect(f"{server.url}/{room}-refused-{i % 4}") as ws:
            await _held(ws)
            await ws.send(b"\x2a")
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.recv()

    async def vanished(i: int) -> None:  # the client disappears without a close (a dropped TCP connection)
        ws = await connect(f"{server.url}/{room}-vanished-{i % 4}")
        await _held(ws)
        ws.transport.abort()

    async def bad_name(i: int) -> None:  # refused before joining any room
        with contextlib.suppress(websockets.ConnectionClosed):
            async with connect(f"{server.url}/%FF{i}") as ws:
                await ws.recv()

    await asyncio.gather(*(refused(i) for i in range(ROUNDS)))
    await asyncio.gather(*(vanished(i) for i in range(ROUNDS)))
    await asyncio.gather(*(bad_name(i) for i in range(ROUNDS)))
    for _ in range(ROUNDS):  # plain HTTP
        await asyncio.to_thread(lambda: urllib.request.urlopen(server.http + "/healthz", timeout=5).read())


async def test_closed_connections_leave_nothing_for_the_cyclic_collector(
    probe: Probe, node: YjsNode, room_name: str
) -> None:
    await _churn(probe, node, room_name)

    def all_closed() -> None:
        assert probe.metric("collab_connections") == 0 and probe.metric("collab_rooms_loaded") == 0

    await eventually(all_closed, timeout=15)
    # Every object of a closed connection is gone, before any collection: nothing waits for the collector.
    kinds = (await probe.census())["kinds"]
    left = {kind: kinds.get(kind, 0) for kind in CONNECTION_KINDS}
    assert not any(left.values()), left
    found = await probe.unreachable()
    # Before the cycles were broken: ~50 objects for each of the 160 websocket connections.
    assert found["unreachable"] <= SLACK, found


def test_the_server_froze_what_start_up_built(server: ServerProcess) -> None:
    """Before it serves, the server freezes its start-up objects (``GcPolicy.freeze_startup``): a full
    collection then never walks them (tens of thousands of objects; 14-16 ms each, at a storm's start)."""
    assert server.metric("collab_gc_frozen_objects") > 10_000
