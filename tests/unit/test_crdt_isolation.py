"""Isolation's verdicts on stored rows: a row is quarantined for killing the worker only when it does so twice.

The pool here is scripted: what it injects is the worker being killed under a row by something else (another
room's op, a deadline missed on a loaded machine), which cannot be timed for real in a test. The real pool's
isolation of real poison is covered end to end by ``tests/e2e/test_poisoned_store.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from collab_server.crdt import isolation
from collab_server.crdt.codec import Kind, Op, Result
from collab_server.crdt.engine import Applied, BadRow, Loaded, Refusal
from persistence.base import Folded


class ScriptedPool:
    """Applies succeed unless ``script`` lists refusals for the update's bytes (one per try, in order)."""

    def __init__(
        self, script: dict[bytes, Iterable[Refusal]], *, reloads: dict[tuple[bytes, ...], list[Result]] | None = None
    ) -> None:
        self.script = {update: list(refusals) for update, refusals in script.items()}
        # What loads of a snapshot plus these rows answer, one per load, in order (then: loaded)
        self.reloads = reloads or {}
        self.reloaded: list[tuple[bytes, ...]] = []  # the rows of every such load
        self.tries: list[tuple[bytes, bool]] = []  # (update, patient) of every apply
        self.adopted: list[str] = []
        self.others: list[tuple[Kind, str]] = []  # (kind, room) of every op but applies and loads

    async def call(self, op: Op, *, track: bool = True, patient: bool = False) -> Result:
        if op.kind is Kind.APPLY:
            self.tries.append((op.payload, patient))
            refusals = self.script.get(op.payload, [])
            return Applied(refusals.pop(0) if refusals else None)
        if op.kind is Kind.LOAD:
            if op.updates:
                self.reloaded.append(op.updates)
                answers = self.reloads.get(op.updates)
                if answers:
                    return answers.pop(0)
            return Loaded(b"state")
        self.others.append((op.kind, op.room))
        if op.kind is Kind.FOLD:
            return Folded(b"snapshot", b"state", list(range(len(op.updates))), [])
        return b"state" if op.kind is Kind.STATE else None

    def adopt(self, room: str) -> None:
        self.adopted.append(room)

    def tries_of(self, update: bytes) -> list[bool]:
        """Whether each apply of ``update`` was patient, in order (put-backs of good rows included)."""
        return [patient for payload, patient in self.tries if payload == update]


ROWS = [b"a", b"b", b"c", b"d"]


async def test_a_row_that_kills_the_worker_once_is_kept() -> None:
    pool = ScriptedPool({b"b": [Refusal.CRASHED], b"c": [Refusal.STALLED]})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert loaded.bad == []
    # the second try of each had the watchdog's longer deadline
    assert pool.tries_of(b"b")[:2] == [False, True] and pool.tries_of(b"c")[:2] == [False, True]


async def test_a_row_that_kills_the_worker_twice_is_quarantined() -> None:
    pool = ScriptedPool({b"c": [Refusal.CRASHED, Refusal.STALLED] * 4})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert [(row.index, row.refusal) for row in loaded.bad] == [(2, Refusal.STALLED)]


async def test_the_library_s_refusal_is_final_at_once() -> None:
    pool = ScriptedPool({b"d": [Refusal.LIBRARY_FAILURE] * 4})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert [(row.index, row.refusal) for row in loaded.bad] == [(3, Refusal.LIBRARY_FAILURE)]
    assert pool.tries_of(b"d") == [False]  # one try: the library says the same every time


async def test_after_a_kill_the_good_rows_go_back_in_one_request() -> None:
    pool = ScriptedPool({b"c": [Refusal.CRASHED]})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert loaded.bad == []
    assert pool.reloaded[0] == (b"a", b"b")  # put back together, not one request per row
    assert pool.tries_of(b"a") == [False] and pool.tries_of(b"b") == [False]  # applied once each, by isolation


async def test_good_rows_that_fail_together_go_back_one_request_each() -> None:
    pool = ScriptedPool({b"c": [Refusal.CRASHED]}, reloads={(b"a", b"b"): [Refusal.CRASHED]})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert loaded.bad == []
    assert pool.reloaded[0] == (b"a", b"b")
    assert pool.tries_of(b"a") == [False, False] and pool.tries_of(b"b") == [False, False]  # tried, then put back


async def test_rows_failing_in_the_final_load_are_reported_by_their_stored_index() -> None:
    # "b" is convicted; then the final load of the good rows (a, c, d) fails on its second one: that is "c"
    final = Loaded(b"state", [BadRow(1, Refusal.LIBRARY_FAILURE)])
    pool = ScriptedPool({b"b": [Refusal.CRASHED] * 2}, reloads={(b"a", b"c", b"d"): [final]})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert [(row.index, row.refusal) for row in loaded.bad] == [(1, Refusal.CRASHED), (2, Refusal.LIBRARY_FAILURE)]


async def test_a_room_dropped_by_another_room_s_restart_is_put_back_and_its_row_tried_again() -> None:
    pool = ScriptedPool({b"a": [Refusal.NOT_LOADED] * 3})
    loaded = await isolation.load(pool, "room", None, ROWS)
    assert loaded.bad == []
    assert pool.tries_of(b"a")[:4] == [False] * 4  # put-backs are not strikes


async def test_a_room_that_never_stays_loaded_convicts_the_row_after_bounded_put_backs() -> None:
    pool = ScriptedPool({b"a": [Refusal.NOT_LOADED] * 100})
    loaded = await isolation.load(pool, "room", None, ROWS[:1])
    assert [(row.index, row.refusal) for row in loaded.bad] == [(0, Refusal.NOT_LOADED)]


async def test_a_fold_is_taken_from_the_document_isolation_built_row_by_row() -> None:
    """Not from the good rows replayed together in another fold: rows that applied one by one can still
    crash the worker together, and a compaction that crashes at every retry restarts its other rooms."""
    pool = ScriptedPool({b"b": [Refusal.LIBRARY_FAILURE]})
    folded = await isolation.fold(pool, "room", None, ROWS)
    scratch = "\x00fold\x00room"
    assert pool.others == [(Kind.FOLD, scratch), (Kind.UNLOAD, scratch)]
    assert folded.folded == [0, 2, 3] and [index for index, _ in folded.bad] == [1]
