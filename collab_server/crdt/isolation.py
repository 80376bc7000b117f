"""Loading and folding stored rows one at a time, to single out the rows that kill a worker.

Used only after a whole load or fold crashed or stalled its worker. The snapshot is loaded alone, then
each logged update is applied in a request of its own; a row that the library refuses, or whose request
kills the worker twice (the pool restarts it each time), is set aside as bad, and the room is reloaded
from the good rows so far before going on (``_load_alone``). The cost is one request per row, paid only for
a room that is already poisoned.

The room being isolated is not among the worker's tracked rooms meanwhile (``track=False``): a restart
caused by one of its rows must not try to rebuild it from the very rows being tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from collab_server.crdt.codec import Kind, Op, Result
from collab_server.crdt.engine import Applied, BadRow, EngineError, Loaded, Refusal
from persistence.base import Folded


class WorkerPool(Protocol):
    """What isolation needs of ``collab_server.crdt.pool.WorkerPool`` (which imports this module)."""

    async def call(self, op: Op, *, track: bool = True, patient: bool = False) -> Result: ...

    def adopt(self, room: str) -> None: ...


_KILLED = (Refusal.CRASHED, Refusal.STALLED)
# A row is convicted of killing the worker only when it does so twice: the first failure may be another
# room's op restarting the worker under it, or a deadline missed on a loaded machine (measured: under load
# average 15-19, 92 of 111 rows of one room were quarantined for "stall" on one failure each), and a
# convicted row is dropped from the room. The second try gets the watchdog's longer retry deadline.
_STRIKES = 2
# Another room's op may restart the worker (this room is not rebuilt: NOT_LOADED) any number of times
# under a busy worker; the room is put back and the row tried again, a bounded number of times.
_PUT_BACKS = 4


async def _load_alone(
    pool: WorkerPool, room: str, snapshot: bytes | None, good: list[bytes], *, patient: bool = False
) -> Loaded | Refusal:
    """The room rebuilt from ``snapshot`` and the rows ``good`` found good so far.

    First in one request (the worker still applies each row in a transaction of its own). Only if that
    fails, as the library's use of freed memory can make rows that applied one by one fail when replayed
    in one load, are they applied one request each, as they were when isolation found them good. One
    request per row after every kill made isolating a room of 10,000 rows with a few killing rows take
    tens of minutes (fuzz run J's ``rooms check --repair``)."""
    if good:
        together = await pool.call(
            Op(Kind.LOAD, room, snapshot=snapshot, updates=tuple(good)), track=False, patient=patient
        )
        if isinstance(together, Loaded) and not together.bad:
            return together
    result = await pool.call(Op(Kind.LOAD, room, snapshot=snapshot), track=False, patient=patient)
    if not isinstance(result, Loaded):
        return result if isinstance(result, Refusal) else Refusal.LIBRARY_FAILURE
    for update in good:
        applied = await pool.call(Op(Kind.APPLY, room, update), track=False)
        refusal = applied.refusal if isinstance(applied, Applied) else Refusal.LIBRARY_FAILURE
        if refusal is not None:
            return refusal
    return result


async def _load_snapshot(pool: WorkerPool, room: str, snapshot: bytes | None) -> Refusal | None:
    """None if ``snapshot`` loads alone (``room`` is left loaded from it), else why not after its strikes."""
    refusal: Refusal | None = None
    for strike in range(_STRIKES):
        first = await _load_alone(pool, room, snapshot, [], patient=strike > 0)
        if isinstance(first, Loaded):
            return first.bad[0].refusal if first.bad else None
        refusal = first
        if refusal not in _KILLED:
            return refusal
    return refusal


async def _try_row(
    pool: WorkerPool, room: str, snapshot: bytes | None, good: list[bytes], update: bytes
) -> Refusal | None:
    """None if ``update`` applies on top of ``snapshot`` and ``good`` (``room`` holding them), else why not.
    The library's refusals are final; a kill counts once per strike, and after every failure the room is
    put back in the (fresh) worker, so ``room`` always holds the good rows when this returns."""
    strikes = put_backs = 0
    while True:
        result = await pool.call(Op(Kind.APPLY, room, update), track=False, patient=strikes > 0)
        refusal = result.refusal if isinstance(result, Applied) else Refusal.LIBRARY_FAILURE
        if refusal is None:
            return None
        if refusal is Refusal.NOT_LOADED:
            put_backs += 1
            verdict = put_backs > _PUT_BACKS
        else:
            strikes += refusal in _KILLED
            verdict = refusal not in _KILLED or strikes >= _STRIKES
        if refusal in _KILLED or refusal is Refusal.NOT_LOADED:  # a fresh worker: put back what was good
            await _load_alone(pool, room, snapshot, good)
        if verdict:
            return refusal


async def _isolate(
    pool: WorkerPool, room: str, snapshot: bytes | None, updates: Sequence[bytes]
) -> tuple[bytes | None, list[int], list[BadRow]]:
    """(the snapshot if it is good, indexes of good updates, bad rows); ``room`` is left loaded."""
    bad: list[BadRow] = []
    refusal = await _load_snapshot(pool, room, snapshot)
    if refusal is not None:
        bad.append(BadRow(-1, refusal))
        snapshot = None
        await _load_alone(pool, room, None, [])
    good: list[int] = []
    good_updates: list[bytes] = []  # updates[i] for i in good, kept alongside (not rebuilt per row)
    for index, update in enumerate(updates):
        refusal = await _try_row(pool, room, snapshot, good_updates, update)
        if refusal is None:
            good.append(index)
            good_updates.append(update)
        else:
            bad.append(BadRow(index, refusal))
    return snapshot, good, bad


# A heap corruption inside the library does not always fault at the same update: row by row, every row
# may pass, and the rows loaded together still crash. Isolating again usually convicts the row that time.
_LOAD_ATTEMPTS = 3


async def load(pool: WorkerPool, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Loaded:
    final: Result = None
    for _ in range(_LOAD_ATTEMPTS):
        good_snapshot, good, bad = await _isolate(pool, room, snapshot, updates)
        # Loaded for good, as the worker's room (tracked: a later restart rebuilds it from the store, which
        # by then no longer holds the bad rows: the caller moves them to quarantine).
        final = await pool.call(
            Op(Kind.LOAD, room, snapshot=good_snapshot, updates=tuple(updates[i] for i in good))
        )
        if isinstance(final, Loaded):
            # The final load numbers its rows among the good ones only: back to the stored rows' indexes.
            failed_now = [BadRow(-1 if row.index < 0 else good[row.index], row.refusal) for row in final.bad]
            return Loaded(final.state_vector, sorted(bad + failed_now, key=lambda row: row.index))
    # Every row applies on its own, one transaction each, yet loading them together kills the worker: keep
    # the document isolation builds (update by update, as the rows were first applied live).
    _, good, bad = await _isolate(pool, room, snapshot, updates)
    state = await pool.call(Op(Kind.STATE, room), track=False)
    if not isinstance(state, bytes):
        raise EngineError(final if isinstance(final, Refusal) else Refusal.LIBRARY_FAILURE)
    pool.adopt(room)
    return Loaded(state, bad)


async def fold(pool: WorkerPool, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
    scratch = f"\x00fold\x00{room}"  # not a valid room name: never a real room's document
    try:
        good_snapshot, good, bad = await _isolate(pool, scratch, snapshot, updates)
        # Folded from the document isolation has just built row by row (the worker folds a document it
        # holds without replaying the rows): the good rows replayed together in one fold can still crash
        # it, and a compaction that crashes at every retry restarts the worker's other rooms each time.
        result = await pool.call(
            Op(Kind.FOLD, scratch, snapshot=good_snapshot, updates=tuple(updates[i] for i in good)), track=False
        )
    finally:
        await pool.call(Op(Kind.UNLOAD, scratch), track=False)
    if not isinstance(result, Folded):
        raise EngineError(result if isinstance(result, Refusal) else Refusal.LIBRARY_FAILURE)
    reasons = [(row.index, row.refusal.reason) for row in bad]
    reasons += [(good[index], reason) for index, reason in result.bad if index >= 0]
    return Folded(result.snapshot, result.state_vector, [good[i] for i in result.folded], reasons)
