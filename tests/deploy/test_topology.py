"""docker-compose.yml's topology, run as processes: the migrate one-shot, then two replicas with the
compose file's settings on PostgreSQL and Redis, behind a consistent-hash proxy that routes by the key
deploy/compose/nginx.conf names; real Yjs clients under Node connect through it.

1. While both replicas are up, each room's sockets all land on one replica (whatever each user's
   ``?token=``), so no edit crosses Redis; a client that reaches the other replica directly still
   converges with them.
2. A rolling restart (SIGTERM, then start again) of each replica in turn while every client keeps
   typing: clients are closed with 1012, reconnect through the proxy to the replica that is up, and
   nothing is lost, in any client or in the store.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from collab_server.settings import ENV_PREFIX, Settings, setting_fields
from tests.deploy.manifests import COMPOSE_FILE, NGINX_CONF, load_yaml
from tests.e2e.test_postgres_durability import _stored_texts
from tests.e2e.test_replicas import replica_env
from tests.support.eventually import eventually
from tests.support.hash_proxy import HashProxy
from tests.support.nginx_conf import read_nginx_upstream
from tests.support.servers import REPO, ServerProcess
from tests.support.writers import Writer, Writing, has_everything, lost
from tests.support.yjs_clients import YjsClient, YjsNode

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., ServerProcess]
SERVICES = ("server-1", "server-2")
# The URLs are this machine's; the replica id is the compose service's name.
REPLACED = {"COLLAB_DATABASE_URL", "COLLAB_BROKER_URL", "COLLAB_REPLICA_ID"}


def interpolate(value: str) -> str:
    """Compose's variable syntax with no variables set: ``${X:-default}`` is its default, ``$$`` a ``$``."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value).replace("$$", "$")


def compose_env(service: str, database_url: str, broker_url: str, prefix: str) -> dict[str, str]:
    """A replica's environment as docker-compose.yml gives it: the settings the server knows, with this
    machine's PostgreSQL and Redis in place of the compose services (and the e2e suite's short heartbeat)."""
    environment: dict[str, Any] = load_yaml(COMPOSE_FILE)["services"][service]["environment"]
    known = {ENV_PREFIX + f.name.upper() for f in setting_fields()}
    env = {key: interpolate(str(value)) for key, value in environment.items() if key in known - REPLACED}
    assert env["COLLAB_AUTO_MIGRATE"] == "off", "replicas must leave migrations to the one-shot"
    return {**env, **replica_env(broker_url, prefix), "COLLAB_DATABASE_URL": database_url, "COLLAB_REPLICA_ID": service}


@dataclass
class Topology:
    replicas: list[ServerProcess]
    proxy: HashProxy
    database_url: str

    def rooms(self, per_replica: int, tag: str) -> list[list[str]]:
        """Room names, ``per_replica`` of them owned by each replica on the proxy's ring."""
        owned: list[list[str]] = [[] for _ in self.replicas]
        n = 0
        while any(len(rooms) < per_replica for rooms in owned):
            room = f"{tag}-{n}"
            owner = self.proxy.owner(f"/ws/{room}")
            if len(owned[owner]) < per_replica:
                owned[owner].append(room)
            n += 1
        return owned


@pytest.fixture
async def topology(
    server_factory: ServerFactory, pg_url: str, shared_redis: str, prefix: str
) -> AsyncIterator[Topology]:
    envs = [compose_env(service, pg_url, shared_redis, prefix) for service in SERVICES]
    # The `migrate` one-shot, which compose runs to completion before any replica starts.
    migrate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "collab_server", "migrate"],
        env={**os.environ, **envs[0]}, capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    replicas = [await asyncio.to_thread(server_factory, env) for env in envs]
    upstream = read_nginx_upstream(NGINX_CONF, "collab")
    assert len(upstream.servers) == len(replicas)
    proxy = HashProxy(
        [("127.0.0.1", replica.port) for replica in replicas],
        key=upstream.hash_key,
        tries=upstream.next_upstream_tries,
    )
    async with proxy:
        yield Topology(replicas, proxy, pg_url)


async def metric(server: ServerProcess, sample: str) -> float:
    return await asyncio.to_thread(server.metric, sample, 0.0)


async def connect(node: YjsNode, url: str, room: str, user: str) -> YjsClient:
    client = await node.connect(url, room, params={"token": user})
    await client.wait_synced()
    return client


async def test_rooms_stay_on_their_replica_while_both_are_up(topology: Topology) -> None:
    owned = topology.rooms(per_replica=3, tag="affinity")
    async with YjsNode() as node:
        clients: dict[str, list[YjsClient]] = {}
        for rooms in owned:
            for room in rooms:
                # Two users of a room, each with their own token in the query string.
                clients[room] = [await connect(node, topology.proxy.url, room, f"{room}-user-{n}") for n in range(2)]
        for room, (first, second) in clients.items():
            await first.insert_text(0, f"hello {room}")

            async def seen(client: YjsClient = second, room: str = room) -> None:
                assert await client.text() == f"hello {room}"

            await eventually(seen, timeout=10)

        for index, (replica, rooms) in enumerate(zip(topology.replicas, owned, strict=True)):
            assert await metric(replica, "collab_connections") == 2 * len(rooms)
            assert await metric(replica, "collab_rooms_loaded") == len(rooms)
            routed = {i for key, i in topology.proxy.routes if key.removeprefix("/ws/") in rooms}
            assert routed == {index}, "a room's sockets went to several replicas"
        for replica in topology.replicas:
            # A room on one replica costs Redis nothing per edit.
            assert await metric(replica, 'collab_broker_published_total{kind="update"}') == 0

        # A client that reaches the other replica (a balancer without affinity) still meets the room.
        room = owned[0][0]
        elsewhere = await connect(node, topology.replicas[1].url, room, "direct")
        await eventually(lambda: _has_text(elsewhere, f"hello {room}"), timeout=10)
        await elsewhere.insert_text(0, "+")
        for client in clients[room]:
            await eventually(partial(_has_text, client, f"+hello {room}"), timeout=10)


async def test_a_rolling_restart_under_load_loses_nothing(topology: Topology) -> None:
    shutdown_timeout = float(
        compose_env(SERVICES[0], "", "", "").get("COLLAB_SHUTDOWN_TIMEOUT", Settings().shutdown_timeout)
    )
    owned = topology.rooms(per_replica=1, tag="rolling")
    rooms = [room for rooms in owned for room in rooms]
    async with YjsNode() as node:
        url = topology.proxy.url
        clients = {room: [await connect(node, url, room, f"user-{n}") for n in range(2)] for room in rooms}
        writers = {room: [Writer(c, f"{room}-w{n}", rate=40) for n, c in enumerate(cs)] for room, cs in clients.items()}
        everyone = [w for ws in writers.values() for w in ws]
        drains = []
        async with Writing(everyone) as writing:
            await writing.made_at_least(20)
            for replica in topology.replicas:
                started = time.monotonic()
                # SIGTERM: sockets closed with 1012, rooms flushed; uvicorn then re-raises the signal.
                assert await replica.astop() in (0, -signal.SIGTERM), replica.log_text()
                drains.append(time.monotonic() - started)
                assert "shutdown complete" in replica.log_text()
                # Its clients reconnect through the proxy to the replica that is up, and keep typing.
                await writing.made_at_least(20)
                await eventually(partial(_all_synced, clients), timeout=15)
                await asyncio.to_thread(replica.start)
                await writing.made_at_least(20)

        for room, room_clients in clients.items():
            for client in room_clients:
                await eventually(partial(has_everything, client, writers[room]), timeout=15)
                status = await client.status()
                assert 1012 in status["closeCodes"], f"{client.name}: {status}"

        async def stored_everything(room: str) -> None:
            names = [w.text_name for w in writers[room]]
            assert lost(writers[room], await _stored_texts(topology.database_url, room, names)) == {}

        for room in rooms:
            await eventually(partial(stored_everything, room), timeout=15)

    # While its owner was down, a room's reconnects went to the next replica on the ring.
    for index, room in enumerate(rooms):
        assert {i for key, i in topology.proxy.routes if key == f"/ws/{room}"} == {0, 1}, f"{room} (owner {index})"
    assert max(drains) < 2 * shutdown_timeout
    total = sum(w.count for w in everyone)
    print(f"\n{total} edits by {len(everyone)} clients across two rolling restarts; 0 lost; "
          f"SIGTERM to exit {', '.join(f'{d:.1f}' for d in drains)} s")


async def _has_text(client: YjsClient, expected: str) -> None:
    assert await client.text() == expected


async def _all_synced(clients: dict[str, list[YjsClient]]) -> None:
    for room_clients in clients.values():
        for client in room_clients:
            status = await client.status()
            assert status["connected"] and status["synced"], f"{client.name}: {status}"
