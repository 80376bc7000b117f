"""Documents survive restarts of the embedded (SQLite) server; broken stored data is refused, not served."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

StartServer = Callable[..., ServerProcess]


async def _text_in_fresh_client(node: YjsNode, server: ServerProcess, room: str) -> str:
    client = await node.connect(server.url, room)
    try:
        await client.wait_synced()
        return await client.text()
    finally:
        await client.destroy()


async def test_a_graceful_restart_keeps_the_document(
    node: YjsNode, server_factory: StartServer, room_name: str
) -> None:
    first = server_factory()
    writer = await node.connect(first.url, room_name)
    await writer.wait_synced()
    await writer.random_edits(100, seed=3)
    await writer.insert_text(0, "survives|")
    expected = await writer.snapshot()
    # uvicorn re-raises the signal once its graceful shutdown has finished
    assert await first.astop(signal.SIGTERM) == -signal.SIGTERM
    assert "shutdown: 1 rooms saved" in first.log_text()
    assert "shutdown complete" in first.log_text()

    async def told_to_reconnect() -> None:
        assert 1012 in (await writer.status())["closeCodes"]

    await eventually(told_to_reconnect)
    await writer.destroy()
    second = server_factory(port=first.port)
    reader = await node.connect(second.url, room_name)
    await reader.wait_synced()
    restored = await reader.snapshot()
    assert (restored["text"], restored["map"], restored["array"]) == (
        expected["text"],
        expected["map"],
        expected["array"],
    )


async def test_edits_survive_a_sigkill_once_the_clients_resync(
    node: YjsNode, server_factory: StartServer, room_name: str
) -> None:
    first = server_factory()
    a = await node.connect(first.url, room_name)
    b = await node.connect(first.url, room_name)
    await a.wait_synced()
    await b.wait_synced()
    await asyncio.gather(a.random_edits(60, seed=1), b.random_edits(60, seed=2))
    first.kill()  # no flush: whatever sat in the group-commit window is gone from the store
    second = server_factory(port=first.port)
    # the providers reconnect by themselves and their sync re-sends what the store missed
    await a.wait_synced(timeout=15)
    await b.wait_synced(timeout=15)

    async def all_there() -> None:
        # Read each time: "synced" means a client got the server's answer, not that the other client's
        # re-sent edits (applied by a CRDT worker, then broadcast) have reached it yet.
        a_text = await a.text()
        assert await _text_in_fresh_client(node, second, room_name) == a_text
        assert await b.text() == a_text

    await eventually(all_there, timeout=20)


async def test_a_corrupt_stored_row_is_quarantined_kept_and_the_room_loads_from_the_rest(
    node: YjsNode, server_factory: StartServer, tmp_path: Path, room_name: str
) -> None:
    database = tmp_path / "collab.sqlite3"
    server = server_factory({"COLLAB_DATABASE_URL": f"sqlite:///{database}"})
    writer = await node.connect(server.url, room_name)
    await writer.wait_synced()
    await writer.insert_text(0, "kept")
    await writer.destroy()
    assert await server.astop() != 0  # graceful: the room is saved
    garbage = b"\x05\x05 not a yjs update at all"
    with sqlite3.connect(database) as db:
        db.execute('INSERT INTO room_updates (room, "update", created_at) VALUES (?, ?, 0)', (room_name, garbage))
    server = server_factory({"COLLAB_DATABASE_URL": f"sqlite:///{database}"}, port=server.port)
    assert await _text_in_fresh_client(node, server, room_name) == "kept"
    with sqlite3.connect(database) as db:
        assert db.execute('SELECT count(*) FROM room_updates WHERE "update" = ?', (garbage,)).fetchone() == (0,)
        kept = db.execute("SELECT room, kind, data FROM room_quarantine").fetchall()
    assert kept == [(room_name, "update", garbage)]
    assert server.metric("collab_quarantined_updates_total") == 1
    assert server.metric("collab_room_load_failures_total") == 1
    assert "moved to quarantine" in server.log_text()
