"""Real Yjs clients (yjs + y-websocket under Node) with tokens in the provider's ``params``.

1. A viewer sees the others' edits live; its own edits are dropped by the server (counted), so the
   document stays unchanged for everyone, a client that joins later included.
2. Two replicas sharing Redis and the store: a participant removed while connected is cut off (4403) on
   both replicas, a lowered editor becomes read-only without reconnecting, and deleting the room closes
   every socket on both replicas with 4404.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_access import access_env
from tests.e2e.test_replicas import prefix, replica_env, shared_redis  # noqa: F401  (fixtures)
from tests.support import tokens
from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsClient, YjsNode

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., ServerProcess]
ALICE = tokens.bearer(tokens.hs256("alice"))


async def call(server: ServerProcess, method: str, path: str, **options: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http, headers=ALICE) as client:
        return await client.request(method, path, **options)  # type: ignore[arg-type]


async def make_room(server: ServerProcess) -> str:
    response = await call(server, "POST", "/api/rooms", json={"visibility": "private"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def set_role(server: ServerProcess, room: str, user: str, role: str) -> None:
    response = await call(server, "PUT", f"/api/rooms/{room}/participants/{user}", json={"role": role})
    assert response.status_code == 200, response.text


async def connect(node: YjsNode, server: ServerProcess, room: str, token: str) -> YjsClient:
    client = await node.connect(server.url, room, params={"token": token})
    await client.wait_synced()
    return client


async def closed_with(client: YjsClient, code: int) -> None:
    status = await client.status()
    assert code in status["closeCodes"], status
    assert not status["shouldConnect"], "a 44xx close is permanent: the provider must not reconnect"


async def test_a_viewer_sees_edits_live_and_cannot_change_the_document(
    tmp_path: Path, node: YjsNode
) -> None:
    server = ServerProcess(env=access_env(tmp_path), log_path=tmp_path / "server.log").start()
    try:
        room = await make_room(server)
        invite = (await call(server, "POST", f"/api/rooms/{room}/invites", json={"role": "viewer"})).json()["token"]
        async with httpx.AsyncClient(base_url=server.http) as guest:  # no token: joins as a guest
            joined = await guest.post(f"/api/rooms/{room}/join", json={"invite": invite})
        assert joined.status_code == 200 and joined.json()["role"] == "viewer", joined.text
        await set_role(server, room, "carol", "editor")

        owner = await connect(node, server, room, tokens.hs256("alice"))
        editor = await connect(node, server, room, tokens.hs256("carol"))
        viewer = await connect(node, server, room, joined.json()["token"])

        await owner.insert_text(0, "hello")

        async def editor_sees_hello() -> None:
            assert await editor.text() == "hello"

        await eventually(editor_sees_hello)
        await editor.insert_text(5, " world")

        async def viewer_sees_it() -> None:
            assert await viewer.text() == "hello world"

        await eventually(viewer_sees_it)

        dropped = server.metric('collab_updates_dropped_total{reason="read_only"}', 0)
        await viewer.insert_text(0, "EVIL ")
        await eventually(lambda: _more(server, dropped))
        await owner.insert_text(11, "!")  # a later edit arrives: the viewer's must not have

        async def everyone_else_unchanged() -> None:
            assert await owner.text() == "hello world!"
            assert await editor.text() == "hello world!"

        await eventually(everyone_else_unchanged)
        late = await connect(node, server, room, tokens.hs256("alice"))
        assert await late.text() == "hello world!"
        assert (await viewer.status())["connected"], "a viewer's write is dropped, the viewer stays"
    finally:
        server.stop()


def _more(server: ServerProcess, before: float) -> None:
    assert server.metric('collab_updates_dropped_total{reason="read_only"}', 0) > before


async def test_revocation_reaches_open_sockets_on_every_replica(
    server_factory: ServerFactory, shared_redis: str, prefix: str, tmp_path: Path, node: YjsNode  # noqa: F811
) -> None:
    env = {**access_env(tmp_path), **replica_env(shared_redis, prefix)}
    first, second = server_factory(env), server_factory(env)
    room = await make_room(first)
    for user in ("dave", "eve"):
        await set_role(first, room, user, "editor")

    owner = await connect(node, first, room, tokens.hs256("alice"))
    dave_here = await connect(node, first, room, tokens.hs256("dave"))
    dave_there = await connect(node, second, room, tokens.hs256("dave"))
    eve = await connect(node, second, room, tokens.hs256("eve"))

    removed = await call(first, "DELETE", f"/api/rooms/{room}/participants/dave")
    assert removed.status_code == 204
    await eventually(lambda: closed_with(dave_here, 4403), timeout=5)
    await eventually(lambda: closed_with(dave_there, 4403), timeout=5)
    assert (await eve.status())["connected"] and (await owner.status())["connected"]

    # eve is lowered to viewer on the other replica's REST: her open socket turns read-only.
    await set_role(second, room, "eve", "viewer")
    dropped = second.metric('collab_updates_dropped_total{reason="read_only"}', 0)

    async def eve_is_read_only() -> None:
        await eve.insert_text(0, "x")
        assert second.metric('collab_updates_dropped_total{reason="read_only"}', 0) > dropped

    await eventually(eve_is_read_only, timeout=5)
    await owner.insert_text(0, "owner")

    async def eve_still_reads() -> None:
        assert "owner" in await eve.text()
        assert await owner.text() == "owner"

    await eventually(eve_still_reads)

    deleted = await call(second, "DELETE", f"/api/rooms/{room}")
    assert deleted.status_code == 204
    await eventually(lambda: closed_with(owner, 4404), timeout=5)
    await eventually(lambda: closed_with(eve, 4404), timeout=5)
    assert (await call(first, "GET", f"/api/rooms/{room}")).status_code == 404
