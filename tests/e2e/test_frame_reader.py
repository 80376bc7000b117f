"""Where a peer's frames are handled (collab_server.reader): in the read callback that received them while
the connection's task has nothing to do, in the task once one has to wait; in the order sent either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect

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
        for update in updates:
            await ws.send(encode_update(update))
            # The step1's answer comes once the update was applied: the next frame finds the task idle.
            assert b"\x00\x01" == (await _step2_after(ws))[:2]
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
