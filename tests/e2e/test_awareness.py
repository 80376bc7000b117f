"""Awareness (cursors, names) with real y-websocket clients: shown, relayed, and removed on leave."""

from __future__ import annotations

from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsClient, YjsNode


async def _pair(node: YjsNode, server: ServerProcess, room: str) -> tuple[YjsClient, YjsClient]:
    a = await node.connect(server.url, room)
    b = await node.connect(server.url, room)
    await a.wait_synced()
    await b.wait_synced()
    return a, b


async def _sees(observer: YjsClient, owner: YjsClient, state: object) -> None:
    owner_id = await owner.client_id()

    async def check() -> None:
        assert (await observer.awareness()).get(owner_id) == state

    await eventually(check)


async def test_awareness_appears_on_the_other_client(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    a, b = await _pair(node, server, room_name)
    await a.set_awareness({"user": {"name": "Zoë", "color": "#f0a"}, "cursor": 4})
    await _sees(b, a, {"user": {"name": "Zoë", "color": "#f0a"}, "cursor": 4})


async def test_a_late_joiner_is_shown_who_is_already_there(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    a = await node.connect(server.url, room_name)
    await a.wait_synced()
    await a.set_awareness({"user": {"name": "early"}})
    late = await node.connect(server.url, room_name)
    await late.wait_synced()
    await _sees(late, a, {"user": {"name": "early"}})


async def test_a_clean_disconnect_removes_the_awareness(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    a, b = await _pair(node, server, room_name)
    await a.set_awareness({"user": {"name": "leaving"}})
    await _sees(b, a, {"user": {"name": "leaving"}})
    await a.disconnect()
    await _sees(b, a, None)


async def test_an_abruptly_dropped_socket_is_removed_at_once(
    node: YjsNode, server: ServerProcess, room_name: str
) -> None:
    a, b = await _pair(node, server, room_name)
    await a.set_awareness({"user": {"name": "crashing"}})
    await _sees(b, a, {"user": {"name": "crashing"}})
    await a.kill()  # no close frame, no awareness goodbye: only the server can tell b
    owner_id = await a.client_id()

    async def gone() -> None:
        assert owner_id not in await b.awareness()

    # well before y-protocols' own 30 s timeout would drop it
    await eventually(gone, timeout=5)
