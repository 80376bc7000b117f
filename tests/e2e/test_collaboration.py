"""Real Yjs clients (yjs 13 + y-websocket 3 under Node) collaborating through a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsClient, YjsNode


async def _synced(node: YjsNode, server: ServerProcess, room: str, count: int = 1) -> list[YjsClient]:
    clients = [await node.connect(server.url, room) for _ in range(count)]
    await asyncio.gather(*(client.wait_synced() for client in clients))
    return clients


async def _converged(clients: list[YjsClient]) -> dict[str, Any]:
    """Wait until every client holds the same document; return it as {"text", "map", "array"}."""

    async def same() -> dict[str, Any]:
        snapshots = [await client.snapshot() for client in clients]
        views = [{"text": s["text"], "map": s["map"], "array": s["array"]} for s in snapshots]
        assert all(view == views[0] for view in views), views
        return views[0]

    return await eventually(same, timeout=20)


async def test_two_clients_converge_on_concurrent_edits(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    a, b = await _synced(node, server, room_name, 2)
    await asyncio.gather(
        a.insert_text(0, "hello "),
        b.insert_text(0, "world"),
        a.map_set("from_a", {"n": 1}),
        b.map_set("from_b", [1, 2]),
        a.array_push(["a1", "a2"]),
        b.array_push(["b1"]),
    )
    doc = await _converged([a, b])
    assert sorted(doc["text"]["text"]) == sorted("hello world")
    assert doc["map"] == {"from_a": {"n": 1}, "from_b": [1, 2]}
    assert sorted(doc["array"]) == ["a1", "a2", "b1"]


async def test_a_late_joiner_gets_everything(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    [a] = await _synced(node, server, room_name)
    await a.random_edits(200, seed=7)
    await a.insert_text(0, "first!")
    late = await node.connect(server.url, room_name)
    await late.wait_synced()
    await _converged([a, late])
    assert (await late.text()).startswith("first!")


async def test_fresh_clients_of_a_quiet_room_get_the_same_document_and_an_edit_is_in_the_next(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    """Fresh clients of an unchanged room are sent the whole document from memory
    (collab_server/crdt/fresh_sync.py); an edit makes the next one come from the room's worker, with it."""
    [writer] = await _synced(node, server, room_name)
    await writer.insert_text(0, "kept")
    await _converged([writer, *await _synced(node, server, room_name)])  # the edit is in: the room is quiet
    from_memory = server.metric('collab_fresh_syncs_total{source="memory"}', 0)
    quiet = await _synced(node, server, room_name, 3)
    assert server.metric('collab_fresh_syncs_total{source="memory"}', 0) >= from_memory + 2
    assert [await client.text() for client in quiet] == ["kept"] * 3
    await writer.insert_text(4, " and more")
    await _converged([writer, *quiet])
    [late] = await _synced(node, server, room_name)
    assert await late.text() == "kept and more"


async def test_rooms_are_isolated(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    [a] = await _synced(node, server, room_name + "-a")
    [b] = await _synced(node, server, room_name + "-b")
    await a.insert_text(0, "only in a")
    await b.insert_text(0, "only in b")
    [a2] = await _synced(node, server, room_name + "-a")
    await eventually(partial(_expect, a2.text, "only in a"))
    assert await b.text() == "only in b"


async def test_offline_edits_merge_on_reconnect(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    a, b = await _synced(node, server, room_name, 2)
    await a.insert_text(0, "base;")
    await eventually(partial(_expect, b.text, "base;"))
    await b.disconnect()
    await a.insert_text(5, "online;")
    await b.insert_text(5, "offline;")
    await b.map_set("written", "offline")
    await b.reconnect()
    await b.wait_synced()
    doc = await _converged([a, b])
    text = doc["text"]["text"]
    assert "online;" in text and "offline;" in text and text.startswith("base;")
    assert doc["map"] == {"written": "offline"}


async def test_twenty_clients_with_fifty_random_edits_each_converge(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    clients = await _synced(node, server, room_name, 20)
    await asyncio.gather(*(client.random_edits(50, seed=i) for i, client in enumerate(clients)))
    await _converged(clients)
    # and what converged is what the server holds: a fresh client sees the same
    [fresh] = await _synced(node, server, room_name)
    await _converged([clients[0], fresh])


async def test_twenty_clients_opening_a_new_room_at_once_all_sync(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    clients = await asyncio.gather(*(node.connect(server.url, room_name) for _ in range(20)))
    await asyncio.gather(*(client.wait_synced(timeout=15) for client in clients))
    await clients[0].insert_text(0, "everyone sees this")
    for client in clients:
        await eventually(partial(_expect, client.text, "everyone sees this"))


async def test_content_is_kept_when_a_room_empties_and_is_rejoined(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    [a] = await _synced(node, server, room_name)
    await a.insert_text(0, "still here")
    await a.map_set("k", "v")
    await a.destroy()
    # the module's server unloads empty rooms after 0.5 s; rejoin both at once and after that
    [b] = await _synced(node, server, room_name)
    await eventually(partial(_expect, b.text, "still here"))
    await b.destroy()

    async def reloaded() -> None:
        [c] = await _synced(node, server, room_name)
        try:
            assert await c.text() == "still here"
            assert await c.map() == {"k": "v"}
        finally:
            await c.destroy()

    await eventually(reloaded)


async def _expect(read: Callable[[], Awaitable[object]], expected: object) -> None:
    assert await read() == expected
