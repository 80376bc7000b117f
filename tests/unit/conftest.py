from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from collab_server.crdt.pool import WorkerPool
from persistence.memory import MemoryStore
from presence.local import LocalHub
from tests.support.pools import Store, running_pool
from tests.unit.cluster import Cluster, Node


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """An empty in-process cluster (tests.unit.cluster): ``await start(cluster, "a")`` adds a replica."""
    hub, store, nodes = LocalHub(), MemoryStore(), list[Node]()
    yield hub, store, nodes
    for node in nodes:
        await node.close()


@pytest.fixture
async def pool() -> AsyncIterator[tuple[WorkerPool, Store]]:
    """A pool of two workers on real processes, and the Store that gives them their rooms back."""
    async with running_pool(2, deadline=0.5) as started:
        yield started
