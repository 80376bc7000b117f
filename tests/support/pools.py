"""What unit tests of the WorkerPool (on real worker processes) need besides the pool: the rooms that
RoomManager would give a restarted worker back, and small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from pycrdt import Doc, Text

from collab_server.crdt.engine import Applied, Loaded
from collab_server.crdt.pool import WorkerPool


class Store:
    """What RoomManager gives a restarted worker: here, every accepted update, in order."""

    def __init__(self) -> None:
        self.rows: dict[str, list[bytes]] = {}
        self.rebuilt: list[str] = []
        self.left_out: dict[str, list[int]] = {}  # room -> indexes of the rows its last rebuild left out
        self.lost: list[str] = []

    async def rebuild_input(self, room: str) -> tuple[bytes | None, list[bytes]]:
        return None, list(self.rows.get(room, []))

    def room_rebuilt(self, room: str, loaded: Loaded) -> None:
        self.rebuilt.append(room)
        self.left_out[room] = [row.index for row in loaded.bad]

    def room_lost(self, room: str) -> None:
        self.lost.append(room)


@contextlib.asynccontextmanager
async def running_pool(workers: int, **options: Any) -> AsyncIterator[tuple[WorkerPool, Store]]:
    """A started pool on real worker processes, and the Store that gives them their rooms back."""
    engine = await WorkerPool(workers, **options).start()
    store = Store()
    engine.attach(store)
    try:
        yield engine, store
    finally:
        await engine.close()


async def apply_all(engine: WorkerPool, store: Store, room: str, updates: list[bytes]) -> list[Applied]:
    """Apply in one tick; accepted updates are 'stored' as RoomManager would, as they are accepted."""
    outcomes: list[Applied] = []
    done = asyncio.Event()

    def on_applied(update: bytes, applied: Applied) -> None:
        if applied.accepted:
            store.rows.setdefault(room, []).append(update)
        outcomes.append(applied)
        if len(outcomes) == len(updates):
            done.set()

    for update in updates:
        engine.apply(room, update, functools.partial(on_applied, update))
    await asyncio.wait_for(done.wait(), 10)
    return outcomes


def text_of(update: bytes) -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get("text", type=Text))
