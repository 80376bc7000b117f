"""RoomManager: one shared load per room, refusal on failed loads, unload with compaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab_server.crdt.engine import BadRow, EngineError, Loaded, Refusal
from collab_server.crdt.local import InProcessEngine
from collab_server.errors import StoreUnavailable
from collab_server.origins import LOCAL
from collab_server.peer import Peer
from collab_server.protocol import encode_update
from collab_server.rooms import RoomManager
from collab_server.settings import Settings
from persistence.base import Fold, Folded, StoredDocument, Version
from persistence.memory import MemoryStore
from persistence.writer import AppendWriter
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.fakes import RecordingSocket, doc_of


class GatedStore(MemoryStore):
    """Counts loads, and holds them until ``gate`` is set, or fails them while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def load(self, room: str) -> StoredDocument | None:
        self.loads += 1
        await self.gate.wait()
        if self.failing:
            raise StoreUnavailable("injected")
        return await super().load(room)


def _peer(name: str) -> Peer:
    return Peer(RecordingSocket(), room_name=name)


@asynccontextmanager
async def _running(store: MemoryStore, **settings: object) -> AsyncIterator[tuple[RoomManager, AppendWriter]]:
    """A RoomManager and its writer on ``store``, closed afterwards even when the test fails."""
    writer = AppendWriter(store, window=0.001)
    writer.start()
    manager = RoomManager(store, writer, Settings(replica_id="test").replace(**settings))
    try:
        yield manager, writer
    finally:
        await manager.close()
        await writer.close()


async def test_concurrent_joins_share_one_load() -> None:
    store = GatedStore()
    store.gate.clear()
    async with _running(store) as (manager, _):
        joins = [asyncio.create_task(manager.join("r", _peer("r"))) for _ in range(20)]
        await asyncio.sleep(0)
        store.gate.set()
        rooms = await asyncio.gather(*joins)
        assert store.loads == 1
        assert len({id(room) for room in rooms}) == 1
        assert len(rooms[0].peers) == 20


async def test_a_failed_load_refuses_the_joiners_and_the_next_join_retries() -> None:
    store = GatedStore()
    await store.append_many([("r", append_text(Doc(), "kept"))])
    store.failing = True
    async with _running(store) as (manager, _):
        with pytest.raises(StoreUnavailable):
            await manager.join("r", _peer("r"))
        assert manager.get("r") is None
        store.failing = False
        room = await manager.join("r", _peer("r"))
        assert str(doc_of(room).get("t", type=Text)) == "kept"


async def test_a_stored_row_that_cannot_be_applied_is_quarantined_and_the_room_loads_from_the_rest() -> None:
    store = MemoryStore()
    bad = b"\x07\x07 definitely not an update"
    await store.append_many([("r", append_text(Doc(), "kept")), ("r", bad)])
    async with _running(store) as (manager, _):
        room = await manager.join("r", _peer("r"))
        assert str(doc_of(room).get("t", type=Text)) == "kept"
        loaded = await store.load("r")
        assert loaded is not None and bad not in loaded.updates
        [kept] = await store.quarantined("r")
        assert kept.data == bad and kept.kind == "update" and kept.reason


async def test_rows_a_rebuild_left_out_are_quarantined() -> None:
    """The RoomSource side of a CRDT worker's restart: the rows its rebuild could not apply (named by
    index into what ``rebuild_input`` gave) go to quarantine; an update still queued for the store is no
    stored row, and is left alone."""
    store = MemoryStore()
    bad = b"\x07\x07 accepted by a corrupted worker"
    async with _running(store) as (manager, _):
        room = await manager.join("r", _peer("r"))
        await store.append_many([("r", append_text(Doc(), "kept")), ("r", bad)])
        _, rows = await manager.rebuild_input("r")
        assert rows[1] == bad
        refused = BadRow(1, Refusal.LIBRARY_FAILURE)
        unverdicted = BadRow(0, Refusal.NOT_LOADED)  # the worker restarted under it: no verdict, kept
        manager.room_rebuilt(
            "r", Loaded(b"\x01\x02", [unverdicted, refused, BadRow(len(rows), Refusal.LIBRARY_FAILURE)])
        )
        assert room.known_state_vector == b"\x01\x02"

        async def quarantined() -> None:
            assert [row.data for row in await store.quarantined("r")] == [bad]

        await eventually(quarantined)
        stored = await store.load("r")
        assert stored is not None and bad not in stored.updates and len(stored.updates) == 1


async def test_the_last_peer_leaving_unloads_after_the_grace_and_compacts() -> None:
    store = MemoryStore()
    async with _running(store, room_grace=0.05) as (manager, _):
        peer = _peer("r")
        room = await manager.join("r", peer)
        room.receive(peer, encode_update(append_text(Doc(), "saved")))
        manager.leave(room, peer)
        await eventually(lambda: _assert(manager.get("r") is None))
        stored = await store.load("r")
        assert stored is not None and stored.updates == [] and stored.snapshot is not None
        assert [v.version for v in await store.versions("r")] == [1]


async def test_a_peer_returning_within_the_grace_finds_the_room_warm() -> None:
    store = GatedStore()
    async with _running(store, room_grace=30) as (manager, _):
        first = _peer("r")
        room = await manager.join("r", first)
        manager.leave(room, first)
        again = await manager.join("r", _peer("r"))
        assert again is room
        assert store.loads == 1


async def test_a_rest_call_shares_the_joiners_load_and_keeps_the_room_until_it_is_done() -> None:
    store = GatedStore()
    store.gate.clear()
    async with _running(store, room_grace=0.05) as (manager, _):
        using = manager.use("r")
        entered = asyncio.create_task(using.__aenter__())
        join = asyncio.create_task(manager.join("r", peer := _peer("r")))
        await asyncio.sleep(0)
        store.gate.set()
        room, joined = await entered, await join
        assert room is joined and store.loads == 1
        manager.leave(room, peer)  # the last peer leaves, but a REST call still holds the room
        assert manager.get("r") is room and not manager._unload_timers  # no unload is even scheduled
        await using.__aexit__(None, None, None)
        await eventually(lambda: _assert(manager.get("r") is None))


async def test_a_room_used_without_any_peer_unloads_after_the_grace() -> None:
    store = GatedStore()
    async with _running(store, room_grace=0.05) as (manager, _):
        async with manager.use("r") as room:
            async with manager.use("r") as again:
                assert again is room
            assert manager.get("r") is room and not manager._unload_timers  # still held by the outer call
        await eventually(lambda: _assert(manager.get("r") is None))
        async with manager.use("r") as reloaded:
            assert reloaded is not room and store.loads == 2


async def test_the_log_is_compacted_once_it_passes_the_threshold() -> None:
    store = MemoryStore()
    async with _running(store, compact_updates=10) as (manager, writer):
        peer = _peer("r")
        room = await manager.join("r", peer)
        client: Doc[Any] = Doc()
        text = client.get("t", type=Text)
        for i in range(25):
            room.receive(peer, encode_update(append_text(client, f"{i},")))

        async def compacted() -> None:
            assert len(await store.versions("r")) >= 1

        await eventually(compacted)
        await writer.flush(timeout=5)
        stored = await store.load("r")
        assert stored is not None
        rebuilt: Doc[Any] = Doc()
        for part in [stored.snapshot or b"\x00\x00", *stored.updates]:
            rebuilt.apply_update(part)
        assert str(rebuilt.get("t", type=Text)) == str(text)


def _assert(condition: bool) -> None:
    assert condition


class OutageStore(MemoryStore):
    """Appends fail while ``down`` is set; compactions are counted (a fault we inject, not a mock)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.compactions = 0

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if self.down:
            raise StoreUnavailable("injected outage")
        await super().append_many(entries)

    async def compact(
        self, room: str, *, fold: Fold, label: str | None = None, created_by: str | None = None
    ) -> Version | None:
        self.compactions += 1
        return await super().compact(room, fold=fold, label=label, created_by=created_by)


async def test_an_outage_past_the_threshold_queues_one_compaction_not_one_per_update() -> None:
    store = OutageStore()
    async with _running(store, compact_updates=5) as (manager, writer):
        peer = _peer("r")
        room = await manager.join("r", peer)
        store.down = True
        client: Doc[Any] = Doc()
        for i in range(200):
            room.receive(peer, encode_update(append_text(client, f"{i},")))
        store.down = False

        async def compacted() -> None:
            assert store.compactions >= 1
            assert writer.pending == 0

        await eventually(compacted)
        # a handful at most (one per threshold crossing after each compaction), never one per update
        assert store.compactions <= 3


async def test_a_load_includes_the_updates_still_queued_for_the_store() -> None:
    store = OutageStore()
    async with _running(store, room_grace=60) as (manager, writer):
        room = await manager.join("r", _peer("r"))
        store.down = True
        client: Doc[Any] = Doc()
        room.apply(append_text(client, "queued"), LOCAL)
        await eventually(lambda: _assert(writer.pending == 1))
        manager.room_lost("r")  # the engine gave the room up; the edit is not in the store yet
        again = await manager.join("r", _peer("r"))
        assert again is not room
        assert str(doc_of(again).get("t", type=Text)) == "queued"
        store.down = False


class UnfoldableEngine(InProcessEngine):
    """Folds fail as when a room's rows crash the CRDT worker at every try (a fault we inject): counted."""

    def __init__(self) -> None:
        super().__init__()
        self.folds = 0

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        self.folds += 1
        raise EngineError(Refusal.CRASHED)


async def test_a_room_whose_rows_cannot_be_folded_still_unloads_and_is_not_folded_again_meanwhile() -> None:
    store = OutageStore()
    engine = UnfoldableEngine()
    writer = AppendWriter(store, window=0.001)
    writer.start()
    manager = RoomManager(
        store, writer, Settings(replica_id="test").replace(compact_updates=5, room_grace=0.05), engine=engine
    )
    try:
        peer = _peer("r")
        room = await manager.join("r", peer)
        client: Doc[Any] = Doc()
        for i in range(50):
            room.receive(peer, encode_update(append_text(client, f"{i},")))
        await eventually(lambda: _assert(engine.folds >= 1 and writer.pending == 0))
        # one failed fold, and no new try for each update past the threshold
        assert engine.folds == 1
        manager.leave(room, peer)
        # the room unloads (every row is stored) instead of staying loaded to retry the fold
        await eventually(lambda: _assert(manager.get("r") is None))
        assert engine.folds == 1
        stored = await store.load("r")
        assert stored is not None and len(stored.updates) == 50 and stored.snapshot is None
    finally:
        await manager.close()
        await writer.close()


class EndlessFoldEngine(UnfoldableEngine):
    """Folds that never finish, as a worker crash-looping at every compaction try looks from here."""

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        self.folds += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_shutdown_commits_every_room_then_compacts_only_while_its_timeout_lasts() -> None:
    store = MemoryStore()
    engine = EndlessFoldEngine()
    writer = AppendWriter(store, window=0.001)
    writer.start()
    manager = RoomManager(store, writer, Settings(replica_id="test").replace(shutdown_timeout=0.3), engine=engine)
    try:
        client: Doc[Any] = Doc()
        for name in ("a", "b", "c"):
            peer = _peer(name)
            room = await manager.join(name, peer)
            room.receive(peer, encode_update(append_text(client, name)))
        closing = asyncio.create_task(manager.close())
        # Three folds of 0.3 s each would be 0.9 s: the whole shutdown has 0.3 s for its compactions.
        assert await asyncio.wait_for(closing, 2) == 3
        assert engine.folds == 1  # the first fold ran out the time; the others were not tried
        for name in ("a", "b", "c"):
            stored = await store.load(name)
            assert stored is not None and len(stored.updates) == 1  # committed, left for the next load to fold
    finally:
        await writer.close()


class RestartingEngine(InProcessEngine):
    """Loads as isolation answers when the worker kept restarting under one row (a fault we inject): the
    row is reported with NOT_LOADED, which is no verdict on it."""

    async def load(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Loaded:
        loaded = await super().load(room, snapshot, updates[:1])
        return Loaded(loaded.state_vector, [BadRow(1, Refusal.NOT_LOADED)])

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        folded = await super().fold(room, snapshot, updates[:1])
        return Folded(folded.snapshot, folded.state_vector, folded.folded, [(1, Refusal.NOT_LOADED.reason)])


async def test_a_row_left_out_for_want_of_a_worker_is_not_quarantined() -> None:
    store = MemoryStore()
    rows = [append_text(Doc(), "first"), append_text(Doc(client_id=7), "second")]
    await store.append_many([("r", row) for row in rows])
    writer = AppendWriter(store, window=0.001)
    writer.start()
    manager = RoomManager(store, writer, Settings(replica_id="test"), engine=RestartingEngine())
    try:
        # the load fails, for now: the room is not served without a row nobody found bad
        with pytest.raises(StoreUnavailable):
            await manager.join("r", _peer("r"))
        assert manager.get("r") is None
        # nor does a compaction quarantine it: it stays in the log
        folded = await manager.fold("r", None, rows)
        assert folded.bad == [] and folded.pending(len(rows)) == 1
        assert await store.quarantined("r") == []
        stored = await store.load("r")
        assert stored is not None and stored.updates == rows
    finally:
        await manager.close()
        await writer.close()
