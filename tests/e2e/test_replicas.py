"""Several replicas, one room: real Yjs clients spread over three server processes sharing Redis and the store.

1. Clients on three replicas converge on concurrent edits; awareness crosses replicas (and reaches the
   presence registry), and is removed everywhere when a client leaves.
2. Redis goes away during continuous edits (killed and restarted empty, on a private redis-server; then
   every connection of ours killed with CLIENT KILL): each replica keeps serving its own peers meanwhile,
   and once Redis is back all replicas converge within seconds with no edit lost.
3. One of three replicas is SIGKILLed: its clients reconnect elsewhere, the cursors of those that do not
   disappear for the clients on the others within the promised three heartbeat intervals (3 s with the
   default COLLAB_HEARTBEAT_INTERVAL, which these replicas run with), and the document — in memory and in
   the store — is whole.
4. A replica started while Redis is unreachable serves its own peers all the same.

Every writer appends numbered tokens to a Y.Text of its own, so "no edit lost" is an exact comparison.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from pycrdt import Text

from collab_server.settings import Settings
from persistence.merge import build_doc
from persistence.sqlite import SQLiteStore
from presence.redis_registry import RedisRegistry
from tests.contract.conftest_broker import REDIS_URL, delete_keys, kill_clients, redis_problem
from tests.support.eventually import eventually
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.servers import ServerProcess
from tests.support.writers import Writer, Writing, has_everything
from tests.support.yjs_clients import YjsClient, YjsNode

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def prefix() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def shared_redis(prefix: str) -> AsyncIterator[str]:
    """The machine's Redis (never restarted by tests); this test's keys are deleted afterwards."""
    problem = await redis_problem()
    if problem is not None:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({problem}); set COLLAB_TEST_REDIS_URL")
    yield REDIS_URL
    await delete_keys(REDIS_URL, prefix)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill and restart."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def replica_env(redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "COLLAB_BROKER_URL": redis_url,
        "COLLAB_BROKER_PREFIX": prefix,
        "COLLAB_ANTI_ENTROPY_INTERVAL": "1",
    }


async def has_text(client: YjsClient, expected: str) -> None:
    assert await client.text() == expected


async def all_have_everything(clients: list[YjsClient], writers: list[Writer]) -> None:
    for client in clients:
        await has_everything(client, writers)


async def connect_all(node: YjsNode, urls: list[str], room: str) -> list[YjsClient]:
    clients = [await node.connect(url, room) for url in urls]
    for client in clients:
        await client.wait_synced()
    return clients


# -- 1. convergence and awareness ------------------------------------------------------------------


async def test_clients_on_three_replicas_converge_and_see_each_other(
    server_factory: ServerFactory, shared_redis: str, prefix: str, room_name: str, node: YjsNode
) -> None:
    servers = [server_factory(replica_env(shared_redis, prefix)) for _ in range(3)]
    clients = await connect_all(node, [s.url for s in servers for _ in range(2)], room_name)

    # Concurrent random edits on every client at once (text, map and array).
    await asyncio.gather(*(client.random_edits(60, seed=n + 1) for n, client in enumerate(clients)))

    async def converged() -> None:
        snapshots = [await client.snapshot() for client in clients]
        first = snapshots[0]
        for snapshot in snapshots[1:]:
            assert snapshot["stateVectorMap"] == first["stateVectorMap"]
            assert (snapshot["text"], snapshot["map"], snapshot["array"]) == (
                first["text"],
                first["map"],
                first["array"],
            )
        ids = {str(await client.client_id()) for client in clients}
        assert ids <= set(first["stateVectorMap"]), "an edit of some client is missing"

    await eventually(converged, timeout=15)

    # Awareness: every client sees every other one, whatever replica it is on.
    ids = [await client.client_id() for client in clients]
    for n, client in enumerate(clients):
        await client.set_awareness({"user": {"name": f"user-{n}", "color": f"#00000{n}"}, "cursor": n})

    async def everyone_sees_everyone(expected: set[int]) -> None:
        for client in clients:
            if await client.client_id() in expected:
                assert set(await client.awareness()) == expected

    await eventually(lambda: everyone_sees_everyone(set(ids)), timeout=10)

    registry = RedisRegistry(shared_redis, prefix=prefix)
    try:

        async def listed(expected: set[int]) -> None:
            entries = await registry.list(room_name)
            assert {e.client_id for e in entries} == expected
            names = {e.client_id: e.user for e in entries}
            assert all(names[cid] == f"user-{ids.index(cid)}" for cid in expected)
            if expected == set(ids):
                assert len({e.replica for e in entries}) == 3

        await eventually(lambda: listed(set(ids)), timeout=10)

        # A client leaves (a clean close on replica 0): it disappears for the clients on the others too.
        await clients[0].disconnect()
        await eventually(lambda: everyone_sees_everyone(set(ids[1:])), timeout=10)
        # ... and a socket that just drops (no goodbye from the client): the server removes it.
        await clients[3].kill()
        await eventually(lambda: everyone_sees_everyone(set(ids[1:3] + ids[4:])), timeout=10)
        await eventually(lambda: listed(set(ids[1:3] + ids[4:])), timeout=10)
    finally:
        await registry.close()


# -- 2. Redis goes away during edits ----------------------------------------------------------------


async def test_replicas_converge_after_redis_restarts_and_connections_are_killed(
    server_factory: ServerFactory, private_redis: RedisServer, prefix: str, room_name: str, node: YjsNode
) -> None:
    servers = [server_factory(replica_env(private_redis.url, prefix)) for _ in range(3)]
    clients = await connect_all(node, [s.url for s in servers for _ in range(2)], room_name)
    writers = [Writer(client, f"w{n}") for n, client in enumerate(clients)]

    # Redis dies during edits (and comes back empty). Each replica keeps serving its own peers meanwhile.
    async with Writing(writers) as writing:
        await writing.made_at_least(20)
        await asyncio.to_thread(private_redis.stop)
        await writing.made_at_least(30)
        pair, pair_writers = clients[0:2], writers[0:2]  # both on replica 0
        marks = {w.name: w.count for w in pair_writers}

        async def same_replica_peers_still_in_step() -> None:
            for client in pair:
                for w in pair_writers:
                    text = await client.text(w.text_name)
                    assert text.count(";") >= marks[w.name], f"{client.name} is behind on {w.name}"

        await eventually(same_replica_peers_still_in_step, timeout=10)
        # A room nobody had open loads and takes edits without Redis too.
        newcomer = await node.connect(servers[1].url, room_name + "-new")
        await newcomer.wait_synced()
        await newcomer.insert_text(0, "written while Redis was down")
        await asyncio.to_thread(private_redis.start)
        back_at = time.monotonic()
        await writing.made_at_least(20)
    await eventually(lambda: all_have_everything(clients, writers), timeout=15)
    after_restart = time.monotonic() - back_at
    elsewhere = await node.connect(servers[2].url, room_name + "-new")
    await elsewhere.wait_synced()

    await eventually(lambda: has_text(elsewhere, "written while Redis was down"), timeout=10)
    await elsewhere.insert_text(0, "!")  # and the two replicas holding that room are linked again
    await eventually(lambda: has_text(newcomer, "!written while Redis was down"), timeout=10)

    # Then every connection of ours is cut at once during edits, as a network fault or a failover would.
    async with Writing(writers) as writing:
        await writing.made_at_least(20)
        assert await kill_clients_with_prefix(private_redis.url, f"collab:{prefix}:") >= 6
        cut_at = time.monotonic()
        await writing.made_at_least(10)
    await eventually(lambda: all_have_everything(clients, writers), timeout=15)
    after_cut = time.monotonic() - cut_at

    resubscribes = 'collab_broker_repairs_total{trigger="resubscribe"}'
    repairs = sum(server.metric(resubscribes, default=0.0) for server in servers)
    assert repairs >= 6, "every replica should have resynchronised its room after each fault"
    print(
        f"\n{sum(w.count for w in writers)} edits on 3 replicas; converged {after_restart:.1f}s after Redis "
        f"came back (edits continuing), {after_cut:.1f}s after CLIENT KILL; {repairs:.0f} resyncs"
    )


async def kill_clients_with_prefix(url: str, prefix: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(url, protocol=2)
    try:
        names = {info.get("name", "") for info in await client.client_list()}
    finally:
        await client.aclose()
    killed = 0
    for name in names:
        if name.startswith(prefix):
            killed += await kill_clients(url, name)
    return killed


# -- 3. a replica dies ------------------------------------------------------------------------------


async def test_a_killed_replicas_clients_move_and_its_presence_goes(
    server_factory: ServerFactory, shared_redis: str, prefix: str, room_name: str, node: YjsNode, tmp_path: Path
) -> None:
    a, b, c = (server_factory(replica_env(shared_redis, prefix)) for _ in range(3))
    on_a, on_b, moving, stranded = await connect_all(node, [a.url, b.url, c.url, c.url], room_name)
    for n, client in enumerate((on_a, on_b, moving, stranded)):
        await client.set_awareness({"user": {"name": f"user-{n}"}})
    ids = [await client.client_id() for client in (on_a, on_b, moving, stranded)]
    stranded_id = ids[3]

    async def sees(client: YjsClient, expected: set[int]) -> None:
        assert set(await client.awareness()) == expected

    await eventually(lambda: sees(on_a, set(ids)), timeout=10)
    await eventually(lambda: sees(on_b, set(ids)), timeout=10)

    left = set(ids) - {stranded_id}

    async def cursors_gone_after(killed_at: float) -> float:
        """Seconds from the SIGKILL until the clients on both survivors no longer see the stranded one."""

        async def both_see_only_those_left() -> None:
            await sees(on_a, left)
            await sees(on_b, left)

        await eventually(both_see_only_those_left, timeout=10)
        return time.monotonic() - killed_at

    writers = [Writer(on_a, "a"), Writer(on_b, "b"), Writer(moving, "moving")]
    async with Writing(writers) as writing:
        await writing.made_at_least(30)
        killed_at = time.monotonic()
        await asyncio.to_thread(c.kill)  # SIGKILL: no flush, no goodbye, no awareness removal
        # Watched from now on, while the rest goes on: the stranded client's cursor must go for everyone ...
        watching = asyncio.create_task(cursors_gone_after(killed_at))
        # ... and the other client of c reconnects elsewhere (the load balancer sends the retry to a live one).
        await node.call("switchServer", client=moving.name, url=a.url, room=room_name)
        await moving.wait_synced()
        await writing.made_at_least(20)
        gone_after = await watching

    registry = RedisRegistry(shared_redis, prefix=prefix)
    try:

        async def not_listed() -> None:
            entries = await registry.list(room_name)
            assert stranded_id not in {e.client_id for e in entries}
            raw = await registry._redis.hgetall(registry.presence_key(room_name))
            assert str(stranded_id).encode() not in raw, "the dead replica's entry was not pruned"

        await eventually(not_listed, timeout=10)
    finally:
        await registry.close()

    clients = [on_a, on_b, moving]
    await eventually(lambda: all_have_everything(clients, writers), timeout=15)

    # The store is whole too: stop the survivors (they flush), then read it as a fresh replica would.
    for server in (a, b):
        await asyncio.to_thread(server.stop)
    store = await SQLiteStore(tmp_path / "collab.sqlite3").open()
    try:
        stored = await store.load(room_name)
    finally:
        await store.close()
    assert stored is not None
    doc = build_doc(room_name, stored.snapshot, stored.updates)
    assert {w.text_name: str(doc.get(w.text_name, type=Text)) for w in writers} == {
        w.text_name: w.expected() for w in writers
    }
    promised = 3 * Settings().heartbeat_interval  # the README's "three COLLAB_HEARTBEAT_INTERVALs"
    print(f"\nstranded client's cursor gone {gone_after:.2f}s after SIGKILL (promised: within {promised:.1f}s)")
    assert gone_after <= promised, f"the dead replica's cursor lingered {gone_after:.2f}s"


async def test_a_replica_starts_and_serves_its_peers_while_redis_is_unreachable(
    server_factory: ServerFactory, prefix: str, room_name: str, node: YjsNode
) -> None:
    server = server_factory(replica_env("redis://127.0.0.1:1/0", prefix))  # nothing listens on port 1
    first, second = await connect_all(node, [server.url, server.url], room_name)
    await first.insert_text(0, "still here")
    await eventually(lambda: has_text(second, "still here"), timeout=10)
    await first.set_awareness({"user": {"name": "Ann"}})
    first_id = await first.client_id()

    async def second_sees_first() -> None:
        assert first_id in await second.awareness()

    await eventually(second_sees_first, timeout=10)
    assert server.metric("collab_broker_connected", default=0.0) == 0
