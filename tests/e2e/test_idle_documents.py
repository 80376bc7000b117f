"""Real Yjs clients in a room whose document its CRDT worker has cooled (``COLLAB_IDLE_DOCUMENT_SECONDS``):
they join, reconnect and edit as if it were loaded, and nothing is lost across a restart."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e


async def test_clients_join_reconnect_and_edit_a_cooled_room(
    node: YjsNode, server_factory: Any, room_name: str
) -> None:
    server: ServerProcess = server_factory({"COLLAB_IDLE_DOCUMENT_SECONDS": "0.3"})
    writer = await node.connect(server.url, room_name)
    await writer.insert_text(0, "written before the pause")

    async def cooled() -> None:
        assert server.metric("collab_idle_documents", 0) == 1

    await eventually(cooled)
    # A fresh client, then a reconnecting one (it asks for what it lacks, by its state vector).
    reader = await node.connect(server.url, room_name)
    await reader.wait_synced()
    assert await reader.text() == "written before the pause"
    await writer.disconnect()
    await writer.reconnect()
    await writer.wait_synced()
    await eventually(cooled)  # joins and syncs left it as it was
    # The first edit after the pause rebuilds the room, and reaches the others.
    await reader.insert_text(0, "then ")
    await writer.insert_text(0, "and ")

    async def converged() -> None:
        assert await writer.text() == await reader.text()
        assert sorted((await writer.text()).split(" ")[:2]) == ["and", "then"]

    await eventually(converged)
    text = await writer.text()
    await writer.destroy()
    await reader.destroy()
    server.stop()
    server.start()
    again = await node.connect(server.url, room_name)
    await again.wait_synced()
    assert await again.text() == text
