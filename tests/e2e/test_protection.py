"""Bad input and slow readers close the offending peer only; everyone else keeps collaborating."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import quote

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from collab_server.protocol import encode_sync_step1, encode_update
from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsClient, YjsNode


async def _close_code(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; return its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    received = closed.value.rcvd
    assert received is not None, "connection dropped without a close frame"
    return received.code, received.reason


async def _working_pair(node: YjsNode, server: ServerProcess, room: str) -> tuple[YjsClient, YjsClient]:
    a = await node.connect(server.url, room)
    b = await node.connect(server.url, room)
    await a.wait_synced()
    await b.wait_synced()
    return a, b


async def _still_collaborating(a: YjsClient, b: YjsClient, marker: str) -> None:
    await a.insert_text(0, marker)

    async def arrived() -> None:
        assert marker in await b.text()

    await eventually(arrived)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xff\xff", "truncated varint"),
        (b"\x00\x02\x80", "truncated varint in sync payload"),
        (b"\x2a\x00", "unknown message type 42"),
        (b"\x00\x02\x10short", "truncated sync payload"),
        (encode_update(b"\x01\x05garbage-update"), "update cannot be decoded"),
        (b"\x01\x05\x01\x01\x01\x01{", "not JSON"),
    ],
)
async def test_a_malformed_frame_closes_that_peer_with_4400_only(
    node: YjsNode, server: ServerProcess, room_name: str, frame: bytes, reason: str
) -> None:
    a, b = await _working_pair(node, server, room_name)
    [other_room] = [await node.connect(server.url, room_name + "-other")]
    await other_room.wait_synced()
    async with connect(f"{server.url}/{room_name}") as bad:
        await bad.recv()  # the server's step1: the room is loaded
        await bad.send(frame)
        code, text = await _close_code(bad)
    assert code == 4400
    assert reason in text
    await _still_collaborating(a, b, "after garbage|")
    await other_room.insert_text(0, "other room fine")
    assert await other_room.text() == "other room fine"


async def test_a_text_frame_is_answered_with_1003(server: ServerProcess, room_name: str) -> None:
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        await ws.send("hello?")
        code, reason = await _close_code(ws)
    assert code == 1003
    assert "binary" in reason


async def test_an_oversized_frame_is_closed_with_1009(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    a, b = await _working_pair(node, server, room_name)
    async with connect(f"{server.url}/{room_name}", max_size=None) as big:
        await big.recv()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await big.send(b"\x00\x02" + b"\x00" * (5 * 1024 * 1024))  # the module's server allows 4 MiB
            while True:
                await asyncio.wait_for(big.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await _still_collaborating(a, b, "after oversized|")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "room name is empty"),
        ("bad%07bell", "control characters"),
        ("x" * 513, "longer than 512 bytes"),
    ],
)
async def test_bad_room_names_are_refused_with_4400(server: ServerProcess, path: str, reason: str) -> None:
    async with connect(f"{server.url}/{path}") as ws:
        code, text = await _close_code(ws)
    assert code == 4400
    assert reason in text


async def test_room_names_are_percent_decoded(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    name = room_name + " board/ünï 🦊"
    a = await node.connect(server.url, name)  # the driver percent-encodes the name
    await a.wait_synced()
    await a.insert_text(0, "decoded")
    # the same room reached with the path spelled another way: only "/" left unescaped
    async with connect(f"{server.url}/{quote(name, safe='/')}") as raw:
        assert (await raw.recv())[:2] == b"\x00\x00"  # the server's step1
        await raw.send(encode_sync_step1(b"\x00"))
        reply = await asyncio.wait_for(raw.recv(decode=False), 5)
        while not reply.startswith(b"\x00\x01"):  # skip awareness, if any, up to our step2
            reply = await asyncio.wait_for(raw.recv(decode=False), 5)
    assert b"decoded" in reply


async def test_a_slow_reader_is_cut_off_without_stalling_the_room(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    a, b = await _working_pair(node, server, room_name)
    # A raw peer that joins, then stops reading: its socket buffers fill, then its send queue.
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(
        (
            f"GET /ws/{room_name} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    try:
        for i in range(400):
            await a.insert_text(0, f"{i:04d}" + "x" * 20_000)

        async def everything_arrived() -> None:
            assert len(await b.text()) == len(await a.text())

        await eventually(everything_arrived, timeout=30)
        # the slow peer was closed (1013 if the close frame got through, else aborted)
        slow.setblocking(False)

        async def slow_peer_gone() -> None:
            data = b""
            try:
                while chunk := slow.recv(1 << 20):
                    data += chunk
            except BlockingIOError:
                raise AssertionError("slow peer still connected") from None
            except ConnectionResetError:
                return

        await eventually(slow_peer_gone, timeout=20)
    finally:
        slow.close()
    await _still_collaborating(a, b, "after slow reader|")
