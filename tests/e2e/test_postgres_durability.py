"""No edit lost on PostgreSQL: real Yjs clients under Node, real server processes, a real database.

1. A replica is killed with SIGKILL while clients write; they move to another replica, which ends up
   with every edit, and so does the store after a restart.
2. The database goes away under load (a proxy we control cuts every connection and refuses new ones);
   loaded rooms keep working, new writes are buffered, and everything reaches the store afterwards.
   Past the buffer's bound new edits are refused (1013, /readyz 503) and come back once it drains.
3. A room whose stored snapshot is corrupt is refused with 1011 and a log line; its bytes stay as stored.

Every client appends numbered tokens to a Y.Text of its own, so "nothing lost" is an exact comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial

import asyncpg
import pytest
from pycrdt import Text

from persistence.merge import build_doc
from persistence.postgres import PostgresStore
from tests.support.eventually import eventually
from tests.support.postgres import reachable, run_sync, temporary_database
from tests.support.servers import ServerProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.writers import Writer, Writing, has_everything, lost
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., ServerProcess]

# How long the database stays away in the outage test. The scenario is ~10 s; the suite uses
# less to stay fast (what is exercised is the same: failed commits, buffering, backoff, reconnect).
OUTAGE_SECONDS = float(os.environ.get("COLLAB_TEST_OUTAGE_SECONDS", "3"))


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    problem = run_sync(reachable)
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable ({problem}); set COLLAB_TEST_POSTGRES_URL")
    with temporary_database("collab_e2e") as url:
        yield url


async def _stored_texts(url: str, room: str, names: list[str]) -> dict[str, str]:
    """What the database holds for ``room``, read the way a replica loading it would."""
    store = await PostgresStore.connect(url, pool_size=1, auto_migrate=False)
    try:
        stored = await store.load(room)
    finally:
        await store.close()
    if stored is None:
        return {name: "" for name in names}
    doc = build_doc(room, stored.snapshot, stored.updates)
    return {name: str(doc.get(name, type=Text)) for name in names}


def _readyz(server: ServerProcess) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(server.http + "/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- 1. a replica dies ----------------------------------------------------------------------------


async def test_no_edit_is_lost_when_a_replica_is_killed(
    server_factory: ServerFactory, pg_url: str, room_name: str
) -> None:
    # A's group-commit window is long (one commit a second), and it is killed just after a commit, when
    # it certainly holds edits the store does not have: those can only come back through the clients'
    # sync with B. What A committed before comes from the store. (The moment is found from the commit
    # counter and the clients' own edits: ``collab_store_pending_updates`` is set once a window, and
    # waiting for it to show 40 took 5 to over 15 seconds from one run to the next.)
    a = server_factory({"COLLAB_DATABASE_URL": pg_url, "COLLAB_COMMIT_WINDOW_MS": "1000"})
    b = server_factory({"COLLAB_DATABASE_URL": pg_url})
    async with YjsNode() as node:
        clients = [await node.connect(a.url, room_name) for _ in range(4)]
        for client in clients:
            await client.wait_synced()
        writers = [Writer(client, f"w{i}") for i, client in enumerate(clients)]
        names = [w.text_name for w in writers]
        async with Writing(writers) as writing:
            await writing.made_at_least(100)
            commits = await asyncio.to_thread(a.metric, "collab_store_batch_updates_count")

            async def committed_again() -> None:
                assert await asyncio.to_thread(a.metric, "collab_store_batch_updates_count") > commits

            await eventually(committed_again, timeout=15)
            # A second until the next commit: what every client writes now waits in A for most of it.
            await writing.made_at_least(40)
            made = writing.counts()
            await asyncio.to_thread(a.kill)  # SIGKILL: no flush, no goodbye
            at_kill = await _stored_texts(pg_url, room_name, names)
            not_stored = {w.name: made[w.name] - len(at_kill[w.text_name].split(";")[:-1]) for w in writers}
            assert sum(not_stored.values()) > 0, "A had stored everything: the test did not exercise recovery"

            # The clients keep editing offline, then their reconnects land on B.
            await writing.made_at_least(20)
            for client in clients:
                await node.call("switchServer", client=client.name, url=b.url, room=room_name)
            for client in clients:
                await client.wait_synced()
            await writing.made_at_least(50)

        reader = await node.connect(b.url, room_name)
        await reader.wait_synced()
        for client in [reader, *clients]:
            await eventually(partial(has_everything, client, writers), timeout=15)

        async def stored_everything() -> None:
            assert lost(writers, await _stored_texts(pg_url, room_name, names)) == {}

        await eventually(stored_everything, timeout=15)

    # After a restart the room comes back from the store alone.
    await asyncio.to_thread(b.stop)  # SIGTERM: an orderly shutdown, which flushes and compacts
    c = server_factory({"COLLAB_DATABASE_URL": pg_url})
    async with YjsNode() as node:
        fresh = await node.connect(c.url, room_name)
        await fresh.wait_synced()
        await has_everything(fresh, writers)
    texts = await _stored_texts(pg_url, room_name, names)
    assert lost(writers, texts) == {}
    assert texts == {w.text_name: w.expected() for w in writers}
    total = sum(w.count for w in writers)
    print(f"\n{total} edits by {len(writers)} clients; {sum(not_stored.values())} unstored at SIGKILL; 0 lost")


# -- 2. the database goes away ----------------------------------------------------------------------


async def test_edits_made_while_the_database_is_down_reach_it_afterwards(
    server_factory: ServerFactory, pg_url: str, room_name: str
) -> None:
    async with TcpProxy.for_url(pg_url) as proxy:
        # Started from a thread: the proxy runs on this event loop and must forward while it starts.
        # The default compaction threshold is passed during the outage: compaction must wait, not pile up.
        env = {"COLLAB_DATABASE_URL": proxy.url(pg_url)}
        server = await asyncio.to_thread(server_factory, env)
        async with YjsNode() as node:
            clients = [await node.connect(server.url, room_name) for _ in range(3)]
            for client in clients:
                await client.wait_synced()
            writers = [Writer(client, f"w{i}") for i, client in enumerate(clients)]
            names = [w.text_name for w in writers]
            async with Writing(writers) as writing:
                await writing.made_at_least(50)
                proxy.cut()  # the database is gone: connections reset, new ones refused
                down_at = time.monotonic()
                before_outage = writing.counts()

                def unready() -> None:
                    status, body = _readyz(server)
                    assert status == 503 and body["store"] == "failing", body

                await eventually(lambda: asyncio.to_thread(unready), timeout=15)

                # The loaded room keeps working: edits made now still reach the other clients.
                watcher = clients[1]
                await writing.made_at_least(20, since=before_outage)
                during = writers[0].expected()

                async def fanned_out() -> None:
                    assert (await watcher.text(writers[0].text_name)).startswith(during)

                await eventually(fanned_out)

                # A room that is not loaded cannot be loaded now: refused with 1011, never served empty.
                other_room = room_name + "-cold"
                stranger = await node.connect(server.url, other_room)

                async def refused() -> None:
                    status = await stranger.status()
                    assert 1011 in status["closeCodes"], status
                    assert not status["synced"]

                await eventually(refused, timeout=15)
                await stranger.kill()

                await eventually(
                    lambda: _assert(time.monotonic() - down_at >= OUTAGE_SECONDS), timeout=OUTAGE_SECONDS + 5
                )
                in_outage = {w.name: w.count - before_outage[w.name] for w in writers}
                proxy.restore()

                def ready() -> None:
                    status, body = _readyz(server)
                    assert status == 200, body

                await eventually(lambda: asyncio.to_thread(ready), timeout=15)
                await writing.made_at_least(20)
            for client in clients:
                status = await client.status()
                assert status["wsconnects"] == 1 and status["closeCodes"] == [], status  # never dropped

            async def stored_everything() -> None:
                texts = await _stored_texts(pg_url, room_name, names)
                assert lost(writers, texts) == {}
                assert texts == {w.text_name: w.expected() for w in writers}

            await eventually(stored_everything, timeout=15)
            print(f"\n{sum(in_outage.values())} edits made during a {OUTAGE_SECONDS:.0f} s outage; 0 lost")
        # Stopped while the proxy still forwards, so that its shutdown flush has a database to reach.
        await asyncio.to_thread(server.stop)
    assert server.log_path is not None
    assert "store append failed" in server.log_path.read_text()  # the "store falls behind" line


async def test_past_the_write_buffer_new_edits_are_refused_and_come_back_later(
    server_factory: ServerFactory, pg_url: str, room_name: str
) -> None:
    # A small buffer: the outage fills it within a second. Edits past it are refused with 1013 before
    # they are applied; the client keeps them, reconnects, and they come back once the store drains.
    async with TcpProxy.for_url(pg_url) as proxy:
        env = {"COLLAB_DATABASE_URL": proxy.url(pg_url), "COLLAB_WRITE_BUFFER_BYTES": "4096"}
        server = await asyncio.to_thread(server_factory, env)
        async with YjsNode() as node:
            client = await node.connect(server.url, room_name)
            await client.wait_synced()
            writer = Writer(client, "w", rate=100)
            async with Writing([writer]) as writing:
                await writing.made_at_least(20, timeout=15)
                proxy.cut()

                async def refused() -> None:
                    status = await client.status()
                    assert 1013 in status["closeCodes"], status
                    reason = status["closeReasons"][status["closeCodes"].index(1013)]
                    assert reason == "the store is not accepting writes; retry later"

                await eventually(refused, timeout=20)
                status, body = await asyncio.to_thread(_readyz, server)
                assert status == 503, body
                proxy.restore()
                await eventually(lambda: _assert_ready(server), timeout=15)
                await writing.made_at_least(20, timeout=15)
            await client.wait_synced()

            async def stored_everything() -> None:
                texts = await _stored_texts(pg_url, room_name, [writer.text_name])
                assert texts == {writer.text_name: writer.expected()}

            await eventually(stored_everything, timeout=15)
        await asyncio.to_thread(server.stop)


async def _assert_ready(server: ServerProcess) -> None:
    status, body = await asyncio.to_thread(_readyz, server)
    assert status == 200, body


# -- 3. a corrupt snapshot ------------------------------------------------------------------------


async def test_a_corrupt_snapshot_is_quarantined_kept_and_the_room_loads_from_the_rest(
    server_factory: ServerFactory, pg_url: str, room_name: str
) -> None:
    server = server_factory({"COLLAB_DATABASE_URL": pg_url})
    garbage = b"\x01\x02 this is not a yjs update \xff\xfe"
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "INSERT INTO room_snapshots (room, version, snapshot, state_vector) VALUES ($1, 7, $2, '')",
            room_name,
            garbage,
        )
        async with YjsNode() as node:
            client = await node.connect(server.url, room_name)
            await client.wait_synced()
            await client.insert_text(0, "after the bad snapshot")
            await client.kill()
        assert await conn.fetchval("SELECT count(*) FROM room_snapshots WHERE room = $1", room_name) == 0
        rows = await conn.fetch("SELECT kind, number, data FROM room_quarantine WHERE room = $1", room_name)
        assert [(r["kind"], r["number"], r["data"]) for r in rows] == [("snapshot", 7, garbage)]
    finally:
        await conn.close()
    assert server.log_path is not None
    assert f"room {room_name!r}: 1 stored rows could not be applied" in server.log_path.read_text()


def _assert(condition: bool) -> None:
    assert condition
