"""Where a peer's frames are handled (collab_server.reader): in the read callback that received them while
the connection's task has nothing to do, in the task once one has to wait; in the order sent either way."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri
from websockets.utils import apply_mask

from collab_server.protocol import encode_sync_step1, encode_update
from tests.support.documents import typing_updates
from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e

IN_TASK = "collab_frames_in_task_total"


async def _frames_in_task(server: ServerProcess) -> float:
    return await asyncio.to_thread(server.metric, IN_TASK)


async def _has_text(reader: Any, expected: str) -> None:
    assert await reader.text("text") == expected


async def _step2_after(ws: Any) -> bytes:
    """Send a step1 for the whole document and return its answer (the step2)."""
    await ws.send(encode_sync_step1(b"\x00"))
    while (reply := await asyncio.wait_for(ws.recv(decode=False), 60))[:2] != b"\x00\x01":
        pass
    return bytes(reply)


async def test_frames_of_a_peer_that_waits_for_its_replies_never_reach_the_task(
    server: ServerProcess, node: YjsNode, room_name: str
) -> None:
    reader = await node.connect(server.url, room_name)
    await reader.wait_synced()
    _, updates = typing_updates(100)
    before = await _frames_in_task(server)
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        for i, update in enumerate(updates):
            await ws.send(encode_update(update))
            # The step1's answer comes once the update was applied: the next frame finds the task idle.
            assert f"{i},".encode() in await _step2_after(ws)
    await eventually(lambda: _has_text(reader, "".join(f"{i}," for i in range(100))))
    # A frame goes to the task only when its read callback ran past the loop turn's budget (4 ms) before
    # reaching it: a garbage collection at that moment can do it, so a few are allowed, not 201.
    assert await _frames_in_task(server) - before <= 5


async def test_a_burst_past_the_turn_budget_is_finished_by_the_task_in_order(
    server_factory: Any, node: YjsNode, room_name: str
) -> None:
    """With a budget of 10 µs a turn, every frame of 50 updates is cut short in the read callback and its
    rest handed to the task; the frames behind it queue up. The step1 sent last is answered with every
    update in it: nothing was handled ahead of what came before it."""
    server: ServerProcess = server_factory({"COLLAB_TURN_BUDGET_MS": "0.01"})
    reader = await node.connect(server.url, room_name)
    await reader.wait_synced()
    _, updates = typing_updates(1500)
    messages = [encode_update(update) for update in updates]
    frames = [b"".join(messages[i : i + 50]) for i in range(0, len(messages), 50)]
    async with connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        for frame in frames:
            await ws.send(frame)
        reply = await _step2_after(ws)
    assert b"1499," in reply
    await eventually(lambda: _has_text(reader, "".join(f"{i}," for i in range(1500))))
    assert await _frames_in_task(server) >= 1


async def test_a_frame_sent_while_the_task_finishes_a_long_one_waits_its_turn(
    server_factory: Any, room_name: str
) -> None:
    """One frame of 20,000 updates takes the read callback past its turn, and the task finishes it over
    many loop turns (a second or more). A step1 sent once the task has it arrives meanwhile, with the
    receive queue empty: it must still wait for the rest of that frame, so its answer holds every update."""
    server: ServerProcess = server_factory(
        {"COLLAB_MAX_MESSAGES_PER_FRAME": "20000", "COLLAB_PEER_MESSAGES_BURST": "100000"}
    )
    _, updates = typing_updates(20_000)
    frame = b"".join(encode_update(update) for update in updates)
    async with connect(f"{server.url}/{room_name}", max_size=None) as ws:
        await ws.recv()
        before = await _frames_in_task(server)
        await ws.send(frame)

        async def the_task_has_it() -> None:
            assert await _frames_in_task(server) > before

        await eventually(the_task_has_it, timeout=30)
        reply = await _step2_after(ws)
    assert b"19999," in reply


@pytest.mark.parametrize("chunk", [1, 7, 300, 4096])
async def test_frames_cut_anywhere_by_the_network_are_read_whole_and_in_order(
    server: ServerProcess, room_name: str, chunk: int
) -> None:
    """The read callback takes whole binary frames itself and leaves everything else to websockets' parser
    (transport.py). Whatever the reads cut, a ping, a fragmented message and thirty updates around them
    come out whole and in order: the pong is sent, and the step1 sent last is answered with every update."""
    client = ClientProtocol(parse_uri(f"{server.url}/{room_name}"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.send_request(client.connect())
    events = _Events(client, reader)
    await _write(writer, client.data_to_send(), chunk=None)
    await events.until(lambda event: isinstance(event, Frame))  # the server's welcome: it has us
    _, updates = typing_updates(32)
    messages = [encode_update(update) for update in updates]
    for message in messages[:15]:
        client.send_binary(message)
    client.send_ping(b"are you there")
    half = len(messages[15]) // 2
    client.send_binary(messages[15][:half], fin=False)
    client.send_continuation(messages[15][half:], fin=True)
    for message in messages[16:]:
        client.send_binary(message)
    client.send_binary(encode_sync_step1(b"\x00"))
    await _write(writer, client.data_to_send(), chunk=chunk)
    await events.until(lambda event: isinstance(event, Frame) and event.opcode is Opcode.PONG)
    step2 = await events.until(lambda event: isinstance(event, Frame) and event.data[:2] == b"\x00\x01")
    assert b"31," in step2.data and b"15," in step2.data
    assert client.close_rcvd is None
    writer.close()


class _Events:
    """The frames the server sends, parsed by websockets' client side."""

    def __init__(self, client: ClientProtocol, reader: asyncio.StreamReader) -> None:
        self._client = client
        self._reader = reader

    async def until(self, wanted: Callable[[Any], bool]) -> Any:
        while True:
            for event in self._client.events_received():
                if wanted(event):
                    return event
            data = await asyncio.wait_for(self._reader.read(65536), 30)
            assert data, "the server closed the connection"
            self._client.receive_data(data)


async def _write(writer: asyncio.StreamWriter, pieces: list[bytes], *, chunk: int | None) -> None:
    """Write ``pieces``, cut into ``chunk``-byte writes (so the server's reads end mid-frame)."""
    data = b"".join(pieces)
    step = chunk or len(data)
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
        await writer.drain()
        if chunk:
            await asyncio.sleep(0)  # one write per loop turn: with TCP_NODELAY, mostly one segment each


async def test_a_whole_frame_inside_a_fragmented_message_is_a_protocol_error(
    server: ServerProcess, room_name: str
) -> None:
    """RFC 6455 5.4: a fragmented message's frames may not interleave with another data frame. The read
    callback must not take such a frame past websockets' parser, which refuses it."""
    client = ClientProtocol(parse_uri(f"{server.url}/{room_name}"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    client.send_request(client.connect())
    events = _Events(client, reader)
    await _write(writer, client.data_to_send(), chunk=None)
    await events.until(lambda event: isinstance(event, Frame))
    _, updates = typing_updates(2)
    client.send_binary(encode_update(updates[0]), fin=False)
    await _write(writer, client.data_to_send(), chunk=None)
    # A second message before the first one's continuation, framed by hand (the client refuses to).
    payload = encode_update(updates[1])
    assert len(payload) < 126
    frame = bytes((0x82, 0x80 | len(payload))) + b"abcd" + apply_mask(payload, b"abcd")
    await _write(writer, [frame], chunk=None)
    close = await events.until(lambda event: isinstance(event, Frame) and event.opcode is Opcode.CLOSE)
    assert int.from_bytes(close.data[:2], "big") == 1002
    writer.close()


async def test_frames_of_many_sockets_read_in_one_poll_all_reach_the_room(
    server_factory: Any, node: YjsNode, room_name: str
) -> None:
    """The turn budget is shared by every socket read in one poll of the loop (``transport.PollClock``):
    with a budget of 10 µs, once a poll's reads have crossed a tick of the loop's clock, the frames of
    the writers read after that are handled by tasks that the server's ``TurnGate`` starts a few per turn.
    With 60 writers sending at once, every update still reaches the room and its reader."""
    server: ServerProcess = server_factory({"COLLAB_TURN_BUDGET_MS": "0.01"})
    reader = await node.connect(server.url, room_name)
    await reader.wait_synced()
    writers = [await connect(f"{server.url}/{room_name}") for _ in range(60)]
    try:
        await asyncio.gather(*(ws.recv() for ws in writers))
        updates = [typing_updates(1, client=1000 + i, start=i)[1][0] for i in range(len(writers))]
        await asyncio.gather(*(ws.send(encode_update(update)) for ws, update in zip(writers, updates, strict=True)))

        async def every_update_is_in() -> None:
            text = await reader.text("text")
            assert sorted(text.split(",")[:-1], key=int) == [str(i) for i in range(len(writers))]

        await eventually(every_update_is_in)
    finally:
        await asyncio.gather(*(ws.close() for ws in writers))
