"""Attacks below the protocol: a ping flood from a client that never reads, a peer that stops answering
pings, and slowloris (upgrade requests sent a little at a time). Each costs the attacker its connections,
never the server its memory or its other clients their service."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from tests.support.eventually import eventually
from tests.support.floods import (
    OP_PING,
    PeakMemory,
    Sentinel,
    assert_no_traceback,
    client_frame,
    hostile_server,
    open_raw_websocket,
    sentinel_room,
)
from tests.support.servers import ServerProcess

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = hostile_server(
        tmp_path_factory.mktemp("hostile-transport"),
        send_queue_bytes=str(MiB),
        ping_interval="1",
        ping_timeout="1",
        handshake_timeout="1",
        max_handshakes="50",
    )
    yield process
    process.stop()


def _ping_until_dropped(server: ServerProcess, room: str, limit_bytes: int) -> int:
    """Send pings and never read; the bytes sent before the server dropped the connection."""
    sock = open_raw_websocket(server, f"/ws/{room}", receive_buffer=4096)
    ping = client_frame(OP_PING, b"p" * 125) * 64
    sent = 0
    try:
        while sent < limit_bytes:
            sock.sendall(ping)
            sent += len(ping)
    except (ConnectionResetError, BrokenPipeError):
        return sent
    finally:
        sock.close()
    raise AssertionError(f"still connected after {sent} bytes of pings")


async def test_a_ping_flood_from_a_client_that_never_reads_is_dropped(server: ServerProcess, room_name: str) -> None:
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling():
        sent = await asyncio.to_thread(_ping_until_dropped, server, room_name, 512 * MiB)
    memory.report(f"ping flood ({sent / MiB:.0f} MiB of pings sent before the drop)")
    sentinel.assert_served()
    assert memory.growth < 32 * MiB
    assert server.metric('collab_connections_dropped_total{reason="ping_flood"}') >= 1


async def test_a_peer_that_stops_answering_pings_is_reset(server: ServerProcess, room_name: str) -> None:
    before = server.metric('collab_connections_dropped_total{reason="keepalive_timeout"}', 0)
    sock = await asyncio.to_thread(open_raw_websocket, server, f"/ws/{room_name}")
    try:

        def dropped() -> None:
            after = server.metric('collab_connections_dropped_total{reason="keepalive_timeout"}', 0)
            assert after == before + 1

        await eventually(dropped, timeout=10)
        # A reset, not a close waiting behind unread data: reading ends in ECONNRESET, not an EOF.
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    finally:
        sock.close()


async def _slow_request(server: ServerProcess, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /ws/{room} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n".encode())
    await writer.drain()
    return reader, writer


def _healthz(server: ServerProcess) -> int:
    with urllib.request.urlopen(server.http + "/healthz", timeout=5) as response:
        return int(response.status)


async def _dropped(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionResetError:
        return True


async def test_slowloris_connections_are_dropped_and_cannot_lock_others_out(
    server: ServerProcess, room_name: str
) -> None:
    full_before = server.metric('collab_connections_dropped_total{reason="handshakes_full"}', 0)
    timeouts_before = server.metric('collab_connections_dropped_total{reason="handshake_timeout"}', 0)
    sentinel, memory = Sentinel(server, sentinel_room(room_name)), PeakMemory(server)
    async with sentinel.watching(), memory.sampling():
        slow = [await _slow_request(server, room_name) for _ in range(120)]
        # With 50 waiting at most, the 70 oldest were evicted by the newer ones; the rest time out.
        # Meanwhile a real client and the health check get through.
        async with connect(f"{server.url}/{room_name}-real") as real:
            assert (await real.recv(decode=False))[:2] == b"\x00\x00"
        assert await asyncio.to_thread(_healthz, server) == 200
        results = await asyncio.gather(*(_dropped(reader) for reader, _ in slow))
    for _, writer in slow:
        writer.close()
    memory.report("slowloris: 120 partial upgrade requests")
    assert all(results)
    sentinel.assert_served()
    assert server.metric('collab_connections_dropped_total{reason="handshakes_full"}') >= full_before + 70
    assert server.metric('collab_connections_dropped_total{reason="handshake_timeout"}') >= timeouts_before + 40
    assert server.metric("collab_handshakes_in_progress") == 0


def test_no_tracebacks_were_logged(server: ServerProcess) -> None:
    assert_no_traceback(server)
    with socket.create_connection(("127.0.0.1", server.port)):
        pass
