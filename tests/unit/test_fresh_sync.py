"""A fresh client's sync (the whole document) is answered once per change of the room's document: later
fresh clients get the same bytes without a request to the room's worker, and never bytes older than an
op queued before they asked."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from prometheus_client import REGISTRY
from pycrdt import Doc, Map, Text

from collab_server.crdt.documents import Documents
from collab_server.crdt.engine import Applied
from collab_server.crdt.fresh_sync import FreshSyncCache
from collab_server.crdt.pool import WorkerPool
from collab_server.protocol import EMPTY_STATE_VECTOR
from tests.support.documents import typing_updates
from tests.support.eventually import eventually
from tests.support.pools import Store, apply_all, text_of


async def test_fresh_clients_after_the_first_are_answered_without_a_request(pool: tuple[WorkerPool, Store]) -> None:
    engine, _ = pool
    _, updates = typing_updates(3)
    await engine.load("r", None, updates)
    first = await engine.diff("r", EMPTY_STATE_VECTOR)
    before, from_memory = engine.requests, _fresh_syncs("memory")
    again = [await engine.diff("r", EMPTY_STATE_VECTOR) for _ in range(5)]
    assert engine.requests == before and _fresh_syncs("memory") == from_memory + 5
    assert again == [first] * 5 and text_of(first) == "0,1,2,"
    assert await engine.full_state("r") == first and engine.requests == before
    # A client that already holds part of the document still asks the worker for what it lacks.
    holding: Doc[Any] = Doc()
    holding.apply_update(updates[0])
    rest = await engine.diff("r", holding.get_state())
    assert engine.requests == before + 1 and rest != first


async def test_an_accepted_update_is_in_the_next_fresh_clients_document(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    _, updates = typing_updates(3)
    await engine.load("r", None, updates[:2])
    assert text_of(await engine.diff("r", EMPTY_STATE_VECTOR)) == "0,1,"
    [applied] = await apply_all(engine, store, "r", updates[2:])
    assert applied.accepted
    before = engine.requests
    assert text_of(await engine.diff("r", EMPTY_STATE_VECTOR)) == "0,1,2,"
    assert engine.requests == before + 1


async def test_an_answer_is_not_kept_when_a_change_was_queued_before_it_came(pool: tuple[WorkerPool, Store]) -> None:
    """The document is asked for, then an update is queued in the same tick: the worker answers the
    document without the update (ops of a room run in order), and that answer must not be handed out
    once the update is in."""
    engine, _ = pool
    _, updates = typing_updates(2)
    await engine.load("r", None, updates[:1])
    applied: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
    asked = asyncio.create_task(engine.diff("r", EMPTY_STATE_VECTOR))
    await asyncio.sleep(0)  # the request is queued
    engine.apply("r", updates[1], applied.set_result)
    assert text_of(await asked) == "0,"
    assert (await applied).accepted
    assert text_of(await engine.diff("r", EMPTY_STATE_VECTOR)) == "0,1,"


async def test_an_unloaded_room_loaded_again_is_not_answered_from_before(pool: tuple[WorkerPool, Store]) -> None:
    engine, _ = pool
    await engine.load("r", None, typing_updates(2)[1])
    assert text_of(await engine.diff("r", EMPTY_STATE_VECTOR)) == "0,1,"
    await engine.unload("r")
    await engine.load("r", None, typing_updates(1, start=7, client=2)[1])
    assert text_of(await engine.diff("r", EMPTY_STATE_VECTOR)) == "7,"


async def test_a_restarted_worker_answers_again(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    _, updates = typing_updates(2)
    store.rows["r"] = list(updates)
    await engine.load("r", None, updates)
    kept = await engine.diff("r", EMPTY_STATE_VECTOR)
    pid = engine.worker_pid("r")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await engine.state_vector("r")  # finds the worker dead: it is replaced and its rooms rebuilt

    def rebuilt() -> None:
        assert "r" in store.rebuilt

    await eventually(rebuilt)
    before = engine.requests
    assert await engine.diff("r", EMPTY_STATE_VECTOR) == kept
    assert engine.requests == before + 1


def test_the_whole_document_is_the_diff_against_an_empty_state_vector() -> None:
    """The pool answers an empty state vector with the whole document: the same bytes, deletes included."""
    documents = Documents()
    doc: Doc[Any] = Doc(client_id=3)
    text, shapes = doc.get("text", type=Text), doc.get("shapes", type=Map)
    text += "hello world"
    shapes["a"] = {"x": 1}
    del text[2:5]
    shapes["a"] = {"x": 2}
    documents.load("r", doc.get_update(), [])
    assert documents.full_state("r") == documents.diff("r", EMPTY_STATE_VECTOR)


def test_kept_bytes_are_bounded_and_the_least_recently_used_go_first() -> None:
    cache = FreshSyncCache(max_bytes=400)
    for room in "abcd":
        cache.answered(room, cache.ask(room), room.encode() * 100)
    assert cache.get("a") == b"a" * 100  # a is now the most recently used
    cache.answered("e", cache.ask("e"), b"e" * 100)
    assert [room for room in "abcde" if cache.get(room) is not None] == ["a", "c", "d", "e"]
    cache.answered("f", cache.ask("f"), b"f" * 101)  # over a quarter of the bound: never kept
    assert cache.get("f") is None


def test_nothing_is_kept_for_a_room_that_changed_or_was_recovered_since_it_was_asked() -> None:
    cache = FreshSyncCache(max_bytes=1000)
    asked = cache.ask("r")
    cache.changed("r")
    cache.answered("r", asked, b"old")
    assert cache.get("r") is None
    asked = cache.ask("r")
    cache.clear()
    cache.answered("r", asked, b"old")
    assert cache.get("r") is None
    cache.answered("r", cache.ask("r"), b"new")
    assert cache.get("r") == b"new"
    cache.changed("r")
    assert cache.get("r") is None


def test_of_two_requests_out_only_the_one_asked_after_the_change_is_kept() -> None:
    cache = FreshSyncCache(max_bytes=1000)
    before = cache.ask("r")
    cache.changed("r")
    after = cache.ask("r")
    cache.answered("r", after, b"new")
    cache.answered("r", before, b"old")  # came back last, but asked before the change
    assert cache.get("r") == b"new"


def test_the_cache_holds_nothing_for_a_room_with_no_answer_kept_and_no_request_out() -> None:
    """Changes come for rooms the pool never answers (a load that failed, an update for a room already
    unloaded): each must leave nothing behind, or room names sent by clients would pile up."""
    cache = FreshSyncCache(max_bytes=1000)
    for index in range(100):
        cache.changed(f"gone-{index}")
    failed = cache.ask("failed")
    assert len(cache) == 1
    cache.answered("failed", failed, None)
    assert len(cache) == 0 and cache.get("failed") is None


async def test_ops_for_rooms_the_workers_do_not_hold_leave_nothing_in_the_cache(
    pool: tuple[WorkerPool, Store],
) -> None:
    engine, store = pool
    await engine.load("r", None, typing_updates(1)[1])
    await engine.diff("r", EMPTY_STATE_VECTOR)
    refused = [await apply_all(engine, store, f"gone-{index}", typing_updates(1)[1]) for index in range(20)]
    assert all(not applied.accepted for [applied] in refused)
    await engine.unload("r")
    assert len(engine.fresh_sync) == 0


def _fresh_syncs(source: str) -> float:
    return REGISTRY.get_sample_value("collab_fresh_syncs_total", {"source": source}) or 0.0
