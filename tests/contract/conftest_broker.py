"""Broker and presence-registry backends for the contract tests: in-process and a real Redis.

Redis is ``COLLAB_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); every test gets its own key
prefix (and so its own channels), and its keys are deleted afterwards. Tests are skipped when Redis
cannot be reached.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from presence.broker import Broker
from presence.local import LocalBroker, LocalHub, LocalRegistry
from presence.registry import PresenceRegistry

REDIS_URL = os.environ.get("COLLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def redis_problem(url: str = REDIS_URL) -> str | None:
    """Why Redis cannot be used for tests, or None."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=1, protocol=2)
    try:
        await client.ping()
    except Exception as exc:  # any failure means: skip, and say why
        return str(exc)
    finally:
        await client.aclose()
    return None


class BrokerBackend(Protocol):
    name: str

    async def broker(self, replica_id: str) -> Broker:
        """A started broker for ``replica_id`` (closed at teardown)."""
        ...

    async def registry(self, *, ttl: float = 60.0) -> PresenceRegistry: ...

    async def cut(self, broker: Broker) -> None:
        """Break ``broker``'s subscriber connection the way a network fault would; it comes back by itself."""
        ...

    async def aclose(self) -> None: ...


class LocalBackend:
    name = "local"

    def __init__(self) -> None:
        self.hub = LocalHub()
        self._opened: list[LocalBroker | LocalRegistry] = []

    async def broker(self, replica_id: str) -> Broker:
        broker = LocalBroker(self.hub, replica_id)
        await broker.start()
        self._opened.append(broker)
        return broker

    async def registry(self, *, ttl: float = 60.0) -> PresenceRegistry:
        registry = LocalRegistry(self.hub, ttl=ttl)
        self._opened.append(registry)
        return registry

    async def cut(self, broker: Broker) -> None:
        assert isinstance(broker, LocalBroker)
        broker.disconnect()
        await asyncio.sleep(0)
        broker.reconnect()

    async def aclose(self) -> None:
        for opened in self._opened:
            await opened.close()


class RedisBackend:
    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self._opened: list[Broker | PresenceRegistry] = []

    async def broker(self, replica_id: str) -> Broker:
        from presence.redis_broker import RedisBroker

        broker = RedisBroker(self.url, replica_id, prefix=self.prefix, ping_interval=0.5)
        await broker.start()
        self._opened.append(broker)
        return broker

    async def registry(self, *, ttl: float = 60.0) -> PresenceRegistry:
        from presence.redis_registry import RedisRegistry

        registry = RedisRegistry(self.url, prefix=self.prefix, ttl=ttl)
        self._opened.append(registry)
        return registry

    async def cut(self, broker: Broker) -> None:
        await kill_clients(self.url, f"collab:{self.prefix}:{broker.replica_id}:sub")

    async def aclose(self) -> None:
        for opened in self._opened:
            await opened.close()
        await delete_keys(self.url, self.prefix)


async def delete_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's own: other users of this Redis are left alone)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, protocol=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def kill_clients(url: str, name: str) -> int:
    """CLIENT KILL every connection named ``name`` (only ours: other users of this Redis are left alone)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, protocol=2)
    killed = 0
    try:
        for info in await client.client_list():
            if info.get("name") == name:
                await client.client_kill_filter(_id=info["id"])
                killed += 1
    finally:
        await client.aclose()
    return killed


@pytest.fixture(params=["local", "redis"])
async def broker_backend(request: pytest.FixtureRequest) -> AsyncIterator[BrokerBackend]:
    """Each broker backend in turn, with fresh channels and keys."""
    backend: BrokerBackend
    if request.param == "redis":
        problem = await redis_problem()
        if problem is not None:
            pytest.skip(f"Redis is not reachable at {REDIS_URL} ({problem}); set COLLAB_TEST_REDIS_URL")
        backend = RedisBackend(REDIS_URL)
    else:
        backend = LocalBackend()
    try:
        yield backend
    finally:
        await backend.aclose()
