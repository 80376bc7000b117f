"""Large rooms load in CRDT workers of their own (``WorkerPool(large_room_bytes=...)``), on real workers."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from collab_server.crdt.pool import WorkerPool, lane_of
from tests.support.documents import typing_updates
from tests.support.pools import Store, apply_all, running_pool, text_of

LARGE = 2000  # bytes of stored rows from which a room is large, in these tests
WORKERS = 2


@pytest.fixture
async def pool() -> AsyncIterator[tuple[WorkerPool, Store]]:
    async with running_pool(WORKERS, document_workers=0, deadline=0.5, large_room_bytes=LARGE) as started:
        yield started


def _large_rows() -> list[bytes]:
    _, rows = typing_updates(200)
    assert sum(map(len, rows)) >= LARGE
    return rows


def _neighbour(room: str) -> str:
    """A room that the hash puts on ``room``'s worker."""
    return next(f"n{i}" for i in range(1000) if lane_of(f"n{i}", WORKERS) == lane_of(room, WORKERS))


def _large_rooms() -> float:
    return REGISTRY.get_sample_value("collab_large_rooms") or 0.0


async def test_a_large_room_loads_in_a_worker_kept_for_large_rooms(pool: tuple[WorkerPool, Store]) -> None:
    engine, _ = pool
    small = _neighbour("big")
    await engine.load(small, None, typing_updates(2)[1])
    hashed_pid = engine.worker_pid(small)
    before = _large_rooms()

    await engine.load("big", None, _large_rows())

    [large_pid] = engine.large_worker_pids()
    assert large_pid is not None and engine.worker_pid("big") == large_pid != hashed_pid
    assert _large_rooms() == before + 1
    assert text_of(await engine.full_state("big")) == "".join(f"{i}," for i in range(200))
    await engine.unload("big")
    assert engine.worker_pid("big") == hashed_pid and _large_rooms() == before
    # Loaded again from a few rows, it is an ordinary room on its hashed worker.
    await engine.load("big", None, typing_updates(1)[1])
    assert engine.worker_pid("big") == hashed_pid


async def test_rooms_on_the_same_worker_do_not_wait_for_a_large_room(pool: tuple[WorkerPool, Store]) -> None:
    """The large room's worker is stopped (as if a load of a huge board held it): its neighbour on the
    hashed worker still edits and syncs, and the large room gets its answer once its worker runs."""
    engine, store = pool
    await engine.load("big", None, _large_rows())
    small = _neighbour("big")
    await engine.load(small, None, [])
    [large_pid] = engine.large_worker_pids()
    assert large_pid is not None
    os.kill(large_pid, signal.SIGSTOP)
    try:
        waiting = asyncio.ensure_future(engine.full_state("big"))
        outcomes = await asyncio.wait_for(apply_all(engine, store, small, typing_updates(3)[1]), 10)
        assert all(outcome.accepted for outcome in outcomes)
        assert text_of(await asyncio.wait_for(engine.full_state(small), 10)) == "0,1,2,"
        assert not waiting.done()
    finally:
        os.kill(large_pid, signal.SIGCONT)
    assert text_of(await waiting).startswith("0,1,2,3,")


async def test_a_large_room_s_worker_is_replaced_with_its_rooms(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    rows = _large_rows()
    await engine.load("big", None, rows)
    store.rows["big"] = list(rows)
    [large_pid] = engine.large_worker_pids()
    assert large_pid is not None
    os.kill(large_pid, signal.SIGKILL)

    assert text_of(await engine.full_state("big")) == "".join(f"{i}," for i in range(200))
    assert store.rebuilt == ["big"]
    [fresh_pid] = engine.large_worker_pids()
    assert fresh_pid not in (None, large_pid) and engine.worker_pid("big") == fresh_pid


async def test_without_a_size_every_room_stays_on_its_hashed_worker() -> None:
    engine = await WorkerPool(1, document_workers=0).start()
    try:
        await engine.load("big", None, _large_rows())
        assert engine.large_worker_pids() == [] and engine.worker_pid("big") == engine._lanes[0].process.pid
    finally:
        await engine.close()


async def test_a_room_that_grows_large_moves_there_with_its_edits_in_order(pool: tuple[WorkerPool, Store]) -> None:
    """Its edits arrive in one tick and pass the size half way: those after it wait for the move, and
    every edit is accepted, in order, into the document the large room's worker now holds."""
    engine, store = pool
    hashed_pid = engine.worker_pid("grows")
    await engine.load("grows", None, [])
    before = _large_rooms()

    _, edits = typing_updates(250)  # the first 200 reach the size
    outcomes = await apply_all(engine, store, "grows", edits)

    assert all(outcome.accepted for outcome in outcomes)
    [large_pid] = engine.large_worker_pids()
    assert large_pid is not None and engine.worker_pid("grows") == large_pid != hashed_pid
    assert _large_rooms() == before + 1
    assert text_of(await engine.full_state("grows")) == "".join(f"{i}," for i in range(250))
    await engine.unload("grows")
    assert engine.worker_pid("grows") == hashed_pid and _large_rooms() == before


async def test_a_room_unloaded_while_it_moves_is_left_in_no_worker(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    await engine.load("grows", None, [])
    done = asyncio.ensure_future(apply_all(engine, store, "grows", _large_rows()))
    await asyncio.sleep(0)  # one turn: apply_all has queued its updates, and the move has begun
    assert "grows" in engine._moving
    await engine.unload("grows")
    await done
    assert not engine._moving and not engine._placed and not engine._sizes
    assert all("grows" not in lane.rooms for lane in [*engine._lanes, *engine._large_lanes])


async def test_a_fold_tells_how_large_the_document_really_is(pool: tuple[WorkerPool, Store]) -> None:
    """Stored rows of edits fold into a much smaller snapshot: later edits count from that, so the room
    stays where it is (counted from the rows it loaded, the same edits would have moved it)."""
    engine, store = pool
    rows = _large_rows()
    kept = rows[: next(n for n in range(len(rows)) if sum(map(len, rows[: n + 1])) >= LARGE - 100)]
    await engine.load("r", None, kept)
    folded = await engine.fold("r", None, kept)
    assert len(folded.snapshot) < LARGE / 2
    outcomes = await apply_all(engine, store, "r", rows[len(kept) : len(kept) + 20])
    assert all(outcome.accepted for outcome in outcomes)
    assert sum(len(row) for row in rows[len(kept) : len(kept) + 20]) > 100
    assert engine.worker_pid("r") not in engine.large_worker_pids() and not engine._moving
