"""Rooms whose document is cooled after a while without updates (``COLLAB_IDLE_DOCUMENT_SECONDS``): the
worker keeps only the encoded base, answers syncs from it, and rebuilds the document at the next update."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from collab_server.crdt import pool as pool_module
from collab_server.crdt.codec import Kind, Op
from collab_server.crdt.cooling import LARGE_TO_COOL, CoolingWatch
from collab_server.crdt.documents import Documents, Head
from collab_server.crdt.engine import Refusal
from persistence.base import Folded
from tests.support.documents import append_text, typing_updates
from tests.support.eventually import eventually
from tests.support.hostile import PARTIAL
from tests.support.pools import apply_all, running_pool
from tests.unit.fakes import ManualClock


def _cooled(documents: Documents, room: str) -> bool:
    return documents.rooms[room].doc is None


def _text(update: bytes, name: str = "text") -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get(name, type=Text))


def test_only_rooms_idle_long_enough_are_cooled_least_recently_updated_first() -> None:
    clock = ManualClock(1000.0)
    documents = Documents(clock)
    _, updates = typing_updates(3)
    for room in ("a", "b", "c"):
        documents.load(room, None, [])
        clock.now += 10
    documents.apply("a", updates[0])  # "a" is now the most recently updated
    assert documents.cooling_due(60) == pytest.approx(40)  # "b", loaded at 1010: idle for 20 s so far
    assert not documents.cool_one(60)
    clock.now += 40
    assert documents.cooling_due(60) == 0
    assert documents.cool_one(60) and _cooled(documents, "b")
    assert not documents.cool_one(60)  # "c" was loaded 10 s after "b"
    clock.now += 10
    assert documents.cool_one(60) and _cooled(documents, "c")
    assert not _cooled(documents, "a")
    clock.now += 30
    assert documents.cool_one(60) and _cooled(documents, "a")
    assert documents.cooling_due(60) is None  # nothing left to cool
    assert not documents.cool_one(60)


def test_a_cooled_room_answers_its_state_and_syncs_without_rebuilding_its_document() -> None:
    documents = Documents()
    writer, updates = typing_updates(40)
    documents.load("r", None, updates[:30])
    partial_client: Doc[Any] = Doc()
    partial_client.apply_update(writer.get_update())
    documents.apply_run("r", updates[30:])
    live_state = documents.state_vector("r")
    assert isinstance(live_state, bytes)
    client_state = typing_updates(10)[0].get_state()  # a client that has the first ten edits

    assert documents.cool_one(0)
    held = documents.rooms["r"]
    assert held.doc is None and held.base == [] and held.packed  # refolded into one snapshot, compressed
    assert documents.state_vector("r") == live_state
    everything = documents.full_state("r")
    assert isinstance(everything, bytes) and _text(everything) == "".join(f"{i}," for i in range(40))
    assert documents.diff("r", b"\x00") == everything
    rest = documents.diff("r", client_state)
    assert isinstance(rest, bytes)
    client, _ = typing_updates(10)
    client.apply_update(rest)
    assert str(client.get("text", type=Text)) == "".join(f"{i}," for i in range(40))
    assert held.doc is None  # none of those reads rebuilt the document
    assert documents.diff("r", b"\x01\x09") == Refusal.BAD_STATE_VECTOR  # still checked by our decoder


def test_an_update_to_a_cooled_room_rebuilds_it_and_applies_on_top() -> None:
    documents = Documents()
    writer, updates = typing_updates(5)
    documents.load("r", None, updates)
    documents.cool_one(0)
    more = append_text(writer, "more", "text")
    applied = documents.apply("r", more)
    assert applied.accepted and applied.new and applied.update
    assert not _cooled(documents, "r")
    assert str(documents.rooms["r"].live().get("text", type=Text)) == "0,1,2,3,4,more"
    assert documents.state_vector("r") == writer.get_state()


def test_a_room_holding_a_pending_update_keeps_it_across_cooling() -> None:
    documents = Documents()
    _, updates = typing_updates(3)
    documents.load("r", None, [updates[0]])
    assert documents.apply("r", updates[2]).new  # waits for updates[1]
    documents.cool_one(0)
    assert len(documents.rooms["r"].base) == 2  # the snapshot and the update still pending
    # Two entries: rebuilt to answer a sync, and then cooled again in its turn.
    assert isinstance(documents.full_state("r"), bytes) and not _cooled(documents, "r")
    assert documents.cool_one(0) and _cooled(documents, "r")
    resolved = documents.apply("r", updates[1])
    assert resolved.accepted and resolved.update
    assert str(documents.rooms["r"].live().get("text", type=Text)) == "0,1,2,"


def test_a_hostile_update_to_a_cooled_room_is_refused_and_leaves_it_as_it_was() -> None:
    documents = Documents()
    base, partial = PARTIAL
    documents.load("r", None, [base])
    before = documents.state_vector("r")
    documents.cool_one(0)
    assert documents.apply("r", partial).refusal is Refusal.LIBRARY_FAILURE
    assert documents.state_vector("r") == before
    assert str(documents.rooms["r"].live().get("t", type=Text)) == "ab"


@pytest.mark.parametrize("read", ["sync of a fresh client", "sync of a client behind", "compaction"])
def test_a_cooled_room_whose_snapshot_does_not_decompress_is_given_up_not_the_worker(read: str) -> None:
    """Every read of a cooled room's compressed snapshot treats bytes that do not decompress as a rebuild
    that failed: the room is dropped and the server reloads it from the store. An exception out of a read
    would end the worker and every other room it holds. The fault is injected: only a memory error of the
    process could cause it."""
    documents = Documents()
    _, updates = typing_updates(4)
    documents.load("r", None, updates)
    documents.load("other", None, updates)
    documents.cool_one(0)
    assert _cooled(documents, "r")
    documents.rooms["r"].packed = b"not zlib"
    if read == "compaction":
        folded = documents.fold("r", None, updates)  # from the stored rows instead
        assert isinstance(folded, Folded) and folded.folded == [0, 1, 2, 3]
        assert _text(folded.snapshot) == "0,1,2,3,"
    elif read == "sync of a fresh client":
        assert documents.full_state("r") is Refusal.NOT_LOADED
    else:
        assert documents.diff("r", typing_updates(2)[0].get_state()) is Refusal.NOT_LOADED
    assert "r" not in documents.rooms and "r" not in documents.warm
    assert _text(documents.full_state("other")) == "0,1,2,3,"  # type: ignore[arg-type]


def test_a_cooled_room_is_compacted_without_a_rebuild_and_unloaded() -> None:
    """A replica shutting down compacts every room with unsaved rows: rebuilding the cooled ones would
    take back all their memory at once."""
    documents = Documents()
    _, updates = typing_updates(6)
    documents.load("r", None, updates)
    documents.cool_one(0)
    folded = documents.fold("r", None, updates)
    assert isinstance(folded, Folded) and folded.folded == list(range(6))
    assert _text(folded.snapshot) == "0,1,2,3,4,5,"
    assert _cooled(documents, "r") and documents.rooms["r"].snapshot_held() == folded.snapshot
    # The next compaction knows that snapshot: stored, it is held, and nothing new is folded twice.
    more = typing_updates(8)[1][6:]
    documents.apply_run("r", more)
    documents.cool_one(0)
    again = documents.fold("r", folded.snapshot, more)
    assert isinstance(again, Folded) and again.folded == [0, 1] and _cooled(documents, "r")
    assert _text(again.snapshot) == "0,1,2,3,4,5,6,7,"
    # Rows another replica stored, which this room has not seen, stay in the log.
    elsewhere = typing_updates(1, client=7)[1]
    assert documents.fold("r", again.snapshot, elsewhere).folded == []  # type: ignore[union-attr]
    documents.unload("r")
    assert "r" not in documents.rooms and "r" not in documents.warm
    assert documents.unloaded_bytes > 0


def _resident_mib(pid: int | None) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def _many_keys(count: int) -> tuple[Doc[Any], bytes]:
    """A Y.Map of ``count`` short entries: 0.74 MiB encoded for 40,000, and 17 MiB once loaded (the
    library holds each entry in hundreds of bytes)."""
    doc: Doc[Any] = Doc()
    entries = doc.get("m", type=Map)
    with doc.transaction():
        for i in range(count):
            entries[f"k{i}"] = f"v{i}"
    return doc, doc.get_update()


async def test_a_worker_cools_an_idle_room_gives_its_memory_back_and_still_serves_it() -> None:
    """A real worker, idle setting 0.3 s: the document's memory goes once the room is idle, the room
    still syncs, and takes an update (rebuilt) that then syncs too."""
    async with running_pool(1, idle_document_seconds=0.3) as (engine, store):
        pid = engine.worker_pid("board")
        idle = _resident_mib(pid)
        writer, board = _many_keys(40_000)
        await engine.load("board", board, [])
        loaded = _resident_mib(pid)
        assert loaded - idle > 10

        def cooled() -> None:
            assert _resident_mib(pid) - idle < (loaded - idle) / 2

        await eventually(cooled, timeout=20)
        assert _entries(await engine.diff("board", b"\x00")) == 40_000
        before = writer.get_state()
        writer.get("m", type=Map)["new"] = "!"
        [applied] = await apply_all(engine, store, "board", [writer.get_update(before)])
        assert applied.accepted
        assert await engine.state_vector("board") == writer.get_state()
        assert _entries(await engine.diff("board", b"\x00")) == 40_001
        await eventually(cooled, timeout=20)  # idle again: cooled again


def _entries(update: bytes) -> int:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return len(doc.get("m", type=Map))


async def test_an_update_to_a_cooled_room_gets_the_time_its_rebuild_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline of 10 ms of CPU a request: a few bytes of update to a cooled room of 3.7 MiB (rebuilt in
    about 100 ms) would be cut off as a hang while the worker rebuilds the room, but the pool expects it.
    (The allowance is one deadline per 5 MiB, ten times what rebuilds took with a deadline of a second;
    with this deadline it is scaled to one per 64 KiB.)"""
    monkeypatch.setattr(pool_module, "_REBUILD_BYTES_PER_DEADLINE", 64 * 1024)
    async with running_pool(1, idle_document_seconds=0.3, deadline=0.01) as (engine, store):
        pid = engine.worker_pid("board")
        idle = _resident_mib(pid)
        writer, board = _many_keys(200_000)
        await engine.load("board", board, [])
        loaded = _resident_mib(pid)
        await eventually(lambda: _check(_resident_mib(pid) - idle < (loaded - idle) / 2), timeout=20)
        before = writer.get_state()
        writer.get("m", type=Map)["new"] = "!"
        [applied] = await apply_all(engine, store, "board", [writer.get_update(before)])
        assert applied.accepted
        assert engine.worker_pid("board") == pid  # not taken for a hang: the same worker


def _check(condition: bool) -> None:
    assert condition


async def test_a_request_that_arrives_while_its_worker_cools_a_large_room_is_not_taken_for_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker cools a room between requests, and one that arrives meanwhile waits for it: a board of
    100,000 records took 1.7 s to cool on a slow machine, longer than the 1 s deadline of a small request.
    Here a deadline of 10 ms, a board of 3.7 MiB, and small requests every few milliseconds while it cools
    (scaled as in the test above): the worker is not killed."""
    monkeypatch.setattr(pool_module, "_REBUILD_BYTES_PER_DEADLINE", 64 * 1024)
    async with running_pool(1, idle_document_seconds=0.3, deadline=0.01) as (engine, _):
        pid = engine.worker_pid("board")
        idle = _resident_mib(pid)
        _, board = _many_keys(200_000)
        await engine.load("small", None, typing_updates(2)[1])
        await engine.load("board", board, [])
        loaded = _resident_mib(pid)
        cooling = asyncio.get_running_loop().time() + 2.0
        while asyncio.get_running_loop().time() < cooling:
            await engine.state_vector("small")
            await asyncio.sleep(0.002)
        assert _resident_mib(pid) - idle < (loaded - idle) / 2  # the board was cooled meanwhile
        assert engine.worker_pid("board") == pid  # and no request was taken for a hang


def test_the_pool_expects_a_cooling_under_way_from_a_worker_s_large_idle_rooms() -> None:
    clock = ManualClock(1000.0)
    watch = CoolingWatch(60, clock)
    watch.loaded("board", 3 * LARGE_TO_COOL, clock.now)
    watch.loaded("other board", 2 * LARGE_TO_COOL, clock.now)
    watch.loaded("small", LARGE_TO_COOL - 1, clock.now)  # cools in milliseconds: no allowance
    lane = {"board", "small"}
    assert watch.may_be_cooling(lane) == 0  # nothing idle yet
    clock.now += 60
    assert watch.may_be_cooling(lane) == 3 * LARGE_TO_COOL  # not "other board": another worker's
    assert watch.may_be_cooling({"other board", "small"}) == 2 * LARGE_TO_COOL
    assert watch.may_be_cooling({"small"}) == 0
    watch.sent([Op(Kind.APPLY, "board", b"x")])  # updated: held again
    assert watch.may_be_cooling(lane) == 0
    clock.now += 60
    watch.folded("board", 100)  # compacted to a small snapshot
    assert watch.may_be_cooling(lane) == 0
    watch.unloaded("other board")
    assert watch.may_be_cooling({"other board"}) == 0


def test_the_pool_expects_a_rebuild_where_no_update_was_sent_for_the_idle_time() -> None:
    clock = ManualClock(1000.0)
    watch = CoolingWatch(60, clock)
    watch.loaded("a", 1000, clock.now)
    watch.loaded("b", 50, clock.now)
    clock.now += 30
    assert watch.sent([Op(Kind.APPLY, "a", b"x" * 24)]) == 0
    assert watch.sent([Op(Kind.STATE, "a"), Op(Kind.STATE, "b")]) == 0
    clock.now += 30
    assert watch.sent([Op(Kind.STATE, "a"), Op(Kind.STATE, "b"), Op(Kind.DIFF, "b", b"\x00")]) == 50  # each once
    # An update sent to a cooled room: its rebuild is expected, and then it is held again.
    assert watch.sent([Op(Kind.APPLY, "b", b"y" * 10), Op(Kind.APPLY, "b", b"z")]) == 50
    assert watch.sent([Op(Kind.STATE, "b")]) == 0
    clock.now += 30
    assert watch.sent([Op(Kind.STATE, "a"), Op(Kind.STATE, "unknown")]) == 1024
    clock.now += 60
    assert watch.sent([Op(Kind.STATE, "b")]) == 61  # its updates count in its size
    assert watch.idle_rooms() == 2
    watch.folded("a", 600)
    assert watch.sent([Op(Kind.FOLD, "a")]) == 600
    assert watch.sent([Op(Kind.STATE, "a")]) == 600  # a cooled room is compacted without a rebuild
    assert watch.idle_rooms() == 2
    watch.unloaded("b")
    assert watch.sent([Op(Kind.STATE, "b")]) == 0
    off = CoolingWatch(0, clock)  # workers never cool: nothing is recorded
    off.loaded("a", 1000, clock.now)
    clock.now += 1000
    assert off.sent([Op(Kind.STATE, "a")]) == 0


def test_a_room_holding_only_an_update_waiting_for_another_is_refolded_before_it_answers_from_its_base() -> None:
    """One base entry is not always a whole document: an update still pending is not what the document
    holds, and is never sent as the room's state."""
    documents = Documents()
    _, updates = typing_updates(2)
    documents.load("r", None, [updates[1]])  # waits for updates[0]
    documents.cool_one(0)
    held = documents.rooms["r"]
    assert len(held.base) == 2 and held.base[1] == updates[1]  # refolded: an empty snapshot, then it
    assert documents.full_state("r") != updates[1]
    assert _text(documents.full_state("r")) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["does not load", "loads another document"])
def test_a_cooled_room_that_does_not_rebuild_to_its_state_is_dropped_for_a_reload(fault: str) -> None:
    """The library can encode a document into bytes it cannot load back (fuzzing found such). A cooled
    room's base is such an encoding, so its rebuild is checked against the state it was cooled at; if it
    falls short, the room is given up (NOT_LOADED: the server reloads it from the store), never served with
    less than it held. The fault is injected into the base: no update is known to cause it."""
    documents = Documents()
    _, updates = typing_updates(4)
    documents.load("r", None, updates)
    documents.cool_one(0)
    held = documents.rooms["r"]
    held.base = [b"\xff" * 8 if fault == "does not load" else typing_updates(2)[1][0]]
    held.packed, held.head = None, Head.UPDATE  # so that syncs must rebuild it too
    assert documents.apply("r", typing_updates(5)[1][4]).refusal is Refusal.NOT_LOADED
    assert "r" not in documents.rooms and "r" not in documents.warm
    documents.load("r", None, updates)  # what the server does next
    documents.cool_one(0)
    held = documents.rooms["r"]
    held.base, held.packed, held.head = [b"\x00\x00"], None, Head.UPDATE
    assert documents.full_state("r") is Refusal.NOT_LOADED and "r" not in documents.rooms


def test_a_room_the_library_failed_on_is_never_cooled() -> None:
    """Rebuilding replays the base, and rows that make the library read freed memory apply in some replays
    and crash others: a room where the library ever failed stays loaded."""
    documents = Documents()
    base, partial = PARTIAL
    documents.load("hostile", None, [base])
    documents.load("calm", None, typing_updates(2)[1])
    assert documents.apply("hostile", partial).refusal is Refusal.LIBRARY_FAILURE
    assert documents.apply("hostile", b"\xff" * 40).refusal is Refusal.MALFORMED  # undecodable: harmless
    while documents.cooling_due(0) is not None:
        documents.cool_one(0)
    assert _cooled(documents, "calm") and not _cooled(documents, "hostile")
    # A room loaded with a row that failed is fragile from the start.
    _, rows = typing_updates(2)
    loaded = documents.load("quarantined", None, [rows[0], b"\x01\x09garbage", rows[1]])
    assert [row.index for row in loaded.bad] == [1]
    while documents.cooling_due(0) is not None:
        documents.cool_one(0)
    assert not _cooled(documents, "quarantined")


@pytest.mark.parametrize("snapshot", [b"\xff" * 8, b"\x00\x00"], ids=["does not load", "another document"])
def test_a_cooled_room_whose_snapshot_does_not_give_its_state_back_is_dropped(snapshot: bytes) -> None:
    """The same check where the base is one whole snapshot, applied as it is (no replay)."""
    documents = Documents()
    _, updates = typing_updates(4)
    documents.load("r", None, updates)
    documents.cool_one(0)
    held = documents.rooms["r"]
    assert held.snapshot_held() is not None
    held.packed = zlib.compress(snapshot)  # the fault, injected: no update is known to cause it
    assert documents.apply("r", typing_updates(5)[1][4]).refusal is Refusal.NOT_LOADED
    assert "r" not in documents.rooms


def test_a_cooled_room_keeps_its_snapshot_compressed_and_gives_it_back_whole() -> None:
    """A cooled room's one snapshot is kept compressed (Yjs's encoding repeats every record's keys): what it
    answers, and the document it is rebuilt into, are the same as before it was cooled."""
    documents = Documents()
    writer, board = _many_keys(20_000)
    documents.load("board", board, [])
    whole = documents.full_state("board")
    assert isinstance(whole, bytes)
    assert documents.cool_one(0)
    held = documents.rooms["board"]
    assert held.packed is not None and len(held.packed) * 2 < len(whole)
    assert documents.full_state("board") == whole and held.doc is None
    before = writer.get_state()
    writer.get("m", type=Map)["new"] = "!"
    assert documents.apply("board", writer.get_update(before)).new
    assert held.packed is None and held.base[0] == whole  # rebuilt from it, and held uncompressed again
    assert _entries(documents.full_state("board")) == 20_001


def _counting_decompressions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the documents module's zlib so that every decompression of a cooled snapshot is counted."""
    from collab_server.crdt import documents as documents_module

    calls: list[int] = []

    class CountingZlib:
        compress = staticmethod(zlib.compress)

        @staticmethod
        def decompress(data: bytes) -> bytes:
            calls.append(len(data))
            return zlib.decompress(data)

    monkeypatch.setattr(documents_module, "zlib", CountingZlib)
    return calls


def test_clients_syncing_from_a_cooled_room_together_share_one_decompression(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class joining a cooled board, or a reconnect storm: every client syncs from the room's snapshot, which
    is decompressed once for all of them, kept while it is in use, and let go once it has not been for a while;
    the first update then rebuilds the room from the bytes already decompressed."""
    clock = ManualClock(1000.0)
    documents = Documents(clock)
    writer, board = _many_keys(5_000)
    documents.load("board", board, [])
    whole = documents.full_state("board")
    assert documents.cool_one(0)
    decompressions = _counting_decompressions(monkeypatch)
    elsewhere = _many_keys(10)[0].get_state()  # a client holding another document's edits only

    for _ in range(5):
        assert documents.diff("board", b"\x00") == whole
        everything = documents.full_state("board")
        assert isinstance(everything, bytes) and _entries(everything) == 5_000
        rest = documents.diff("board", elsewhere)
        assert isinstance(rest, bytes) and _entries(rest) == 5_000  # a diff of the snapshot
        clock.now += 1.0  # each sync within a second of the one before
    assert len(decompressions) == 1
    assert documents.unpacked_due() == pytest.approx(1.0)

    clock.now += 1.0
    assert documents.unpacked_due() == 0
    documents.forget_unpacked()
    assert documents.unpacked_due() is None
    assert documents.diff("board", b"\x00") == whole
    assert len(decompressions) == 2  # let go, so decompressed again

    before = writer.get_state()
    writer.get("m", type=Map)["new"] = "!"
    assert documents.apply("board", writer.get_update(before)).new
    assert len(decompressions) == 2  # the rebuild took the kept bytes
    assert documents.unpacked_due() is None


def test_a_room_cooled_again_never_answers_from_the_snapshot_kept_before() -> None:
    clock = ManualClock(1000.0)
    documents = Documents(clock)
    writer, board = _many_keys(100)
    documents.load("board", board, [])
    assert documents.cool_one(0)
    first = documents.full_state("board")  # decompressed and kept
    before = writer.get_state()
    writer.get("m", type=Map)["new"] = "!"
    assert documents.apply("board", writer.get_update(before)).new
    assert documents.cool_one(0)  # cooled again at once: a new snapshot
    again = documents.full_state("board")
    assert isinstance(again, bytes) and again != first and _entries(again) == 101
    documents.unload("board")
    documents.load("board", board, [])
    assert documents.cool_one(0)
    assert documents.full_state("board") == first  # reloaded from the store's older bytes, not the kept ones


async def test_a_worker_waiting_for_requests_lets_go_of_the_snapshot_it_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's idle wait wakes for the kept snapshot's time as it does for cooling, and returns as soon
    as a request arrives."""
    import os
    import threading

    from collab_server.crdt import documents as documents_module
    from collab_server.crdt import worker

    monkeypatch.setattr(documents_module, "_UNPACKED_SECONDS", 0.05)
    documents = Documents()
    documents.load("board", _many_keys(100)[1], [])
    assert documents.cool_one(0)
    assert isinstance(documents.diff("board", b"\x00"), bytes)
    assert documents.unpacked_due() is not None
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb", buffering=0) as requests:
        waiting = threading.Thread(target=worker._cool_until_request, args=(documents, requests, 3600.0))
        waiting.start()
        try:

            def let_go() -> None:
                assert documents.unpacked_due() is None

            await eventually(let_go)
            assert waiting.is_alive()  # still waiting for a request
        finally:
            os.write(write_end, b"\x00")
            os.close(write_end)
            waiting.join(timeout=10)
    assert not waiting.is_alive()


def test_a_client_that_lacks_nothing_is_answered_from_a_cooled_room_without_reading_its_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients connected while their room went idle reconnect (a network blip) holding every insertion it has,
    some with edits of their own: each is answered what the live document would answer it, its delete set,
    without the snapshot being decompressed or diffed (which decodes all of it). One behind gets its diff."""
    writer, updates = typing_updates(30)
    deleting = writer.get_state()
    text = writer.get("text", type=Text)
    del text[0:5]  # a delete set that is not empty
    updates.append(writer.get_update(deleting))
    warm, cooled = Documents(), Documents()
    for documents in (warm, cooled):
        documents.load("r", None, updates)
    assert cooled.cool_one(0)
    decompressions = _counting_decompressions(monkeypatch)

    up_to_date = writer.get_state()
    ahead: Doc[Any] = Doc()
    ahead.apply_update(writer.get_update())
    ahead.get("text", type=Text).insert(0, "mine")  # an edit the room has not seen yet
    for state in (up_to_date, ahead.get_state()):
        answer = cooled.diff("r", state)
        assert answer == warm.diff("r", state)
        assert isinstance(answer, bytes) and answer[0] == 0 and len(answer) > 2  # no structs, a delete set
    assert cooled.delete_set("r") == warm.delete_set("r")
    assert decompressions == [] and cooled.rooms["r"].doc is None

    behind = typing_updates(10)[0].get_state()
    rest = cooled.diff("r", behind)
    assert isinstance(rest, bytes) and rest[0] != 0 and len(decompressions) == 1
    client, _ = typing_updates(10)
    client.apply_update(rest)
    assert str(client.get("text", type=Text)) == str(text)
