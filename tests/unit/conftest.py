from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from persistence.memory import MemoryStore
from presence.local import LocalHub
from tests.unit.cluster import Cluster, Node


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """An empty in-process cluster (tests.unit.cluster): ``await start(cluster, "a")`` adds a replica."""
    hub, store, nodes = LocalHub(), MemoryStore(), list[Node]()
    yield hub, store, nodes
    for node in nodes:
        await node.close()
