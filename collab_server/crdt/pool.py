"""``WorkerPool``: the documents of rooms in N supervised worker processes.

Rooms are assigned to workers by a stable hash of their name (``lane_of``), so a room's document lives in
one worker and all its requests go through one ordered pipe. Document calls (``crdt.document_calls``: the
REST API's JSON views, patches and restores) are stateless and can be slow on a large document, so they go
to ``document_workers`` workers of their own, which hold no room: live edits never wait behind them.

Large rooms. A worker runs one request at a time, and loading, folding or syncing a board of tens of
megabytes is one request of a second or more: every room sharing that worker would wait for it. So a room
whose stored rows reach ``large_room_bytes`` when it loads goes to one of ``large_room_workers`` workers
kept for such rooms, and stays there until it unloads (``_placed``). They start with the others: spawned
later, from a server holding a large board's bytes, the fork alone held the event loop for 20-30 ms.
Large rooms may wait for each other; the replica's other rooms do not wait for them. A room that grows
past the size while loaded (its stored size at load plus the updates applied since, or its last fold's
snapshot plus those since: ``_sizes``) moves there (``_move``): its worker encodes the whole document, a
large room's worker loads it, and the ops queued for the room meanwhile wait (``_Move.held``) and then
follow it, in order.

Batching. Ops (applies, diffs, loads, ...) made during one event-loop tick are sent to their worker as one
request; while a request is in flight, new ops wait and go out together when it is answered. So the hop
costs one round trip per tick per busy worker, not one per update, and each worker runs Yrs on a core of
its own, off the event loop.

The watchdog. Every request has a deadline (``deadline`` seconds of the worker's CPU time, more for large
loads and folds, and more for a room found heavy: ``_Lane.heavy``). A worker that uses its deadline
without answering, dies (segfault, abort), or answers garbage is killed and replaced.
The fresh worker gets its rooms back from the ``RoomSource`` (the store plus the updates accepted but not
yet committed, which the networking process still holds: no acknowledged edit is lost). Then the ops of
the request that killed it are retried one at a time: the one that kills again is the poison (a load or
fold alone in its request is not retried: its caller replays the rows one by one, ``isolation``). It is
refused (CRASHED or STALLED), an update's bytes go on the poison list, and everything else in the batch
is answered normally. Rooms of other workers notice nothing; rooms of the same worker wait for the
restart.

The retry reproduces a crash because the store holds the exact bytes the worker applied, in order
(``room.Room``): the rebuilt document has the same history as the one that died. That holds until the
room's log is compacted (the rebuild then starts from the folded snapshot) or the worker rebuilt the
room itself after a refused update (from its refolded base): from then on the live document and a
replay of the store can differ, a crash may not reproduce on retry (the update is then accepted), and a
stored row may fail when replayed later. Loads and ``collab-server rooms check --repair`` quarantine such
rows, so the room still loads; ``bench/fuzz.py`` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from collab_server import metrics
from collab_server.crdt import isolation
from collab_server.crdt.codec import CodecError, Kind, Op, Result, decode_results, encode_ops
from collab_server.crdt.cooling import CoolingWatch
from collab_server.crdt.document_calls import CallError, DocumentAnswer, DocumentCall, decode_answer, encode_call
from collab_server.crdt.engine import Applied, BadRow, EngineError, Loaded, OnApplied, Refusal
from collab_server.crdt.fresh_sync import FreshSyncCache
from collab_server.crdt.poison import PoisonList
from collab_server.crdt.process import Answer, WorkerDied, WorkerProcess
from collab_server.native_memory import RELEASE_AFTER_BYTES, release_free_memory
from collab_server.protocol import EMPTY_STATE_VECTOR
from persistence.base import Folded

logger = logging.getLogger(__name__)

_START_TIMEOUT = 15.0
# A request gets one more deadline per 64 KiB it carries (a client's first step2 can be large and is
# legitimately slow) and per 500 ops (on a busy server a tick's batch can hold thousands: a room load or a
# small apply costs well under 2 ms, but thousands of them do not fit in one deadline), loads, folds and
# document calls five times as long (they replay whole logs or walk whole documents in Python), and the
# retry that convicts an op twice as long: a legitimate op on a loaded machine finishes, an endless loop
# does not.
_BYTES_PER_DEADLINE = 64 * 1024
_OPS_PER_DEADLINE = 500
# One request carries at most this many ops, or (past its first op) this many bytes; the rest of the
# lane's queue goes in the next. This bounds what those allowances can add up to (a hang hidden in a
# batch of tens of thousands of ops would otherwise run for that many deadlines before the watchdog
# cut it off), and the CPU one kill throws away.
_MAX_BATCH_OPS = 2000
_MAX_BATCH_BYTES = 1024 * 1024
_LOAD_FACTOR = 5.0
# A request to a room its worker may have cooled (``cooling``) gets one more deadline per 5 MiB of the room
# to rebuild: rebuilds took up to 18 ms for a tldraw board of 0.44 MiB and 0.94 s for one of 44 MiB, about
# 20 ms a MiB, so that is ten times as long (and no more: it is also what a hang in such a room may hold its
# worker before the watchdog cuts it off).
_REBUILD_BYTES_PER_DEADLINE = 5 * 1024 * 1024
_RELEASE_DELAY = 1.0
_RETRY_FACTOR = 2.0
# Deadlines are CPU time (``_within_deadline``); a request that uses no CPU (a blocked worker) is cut off
# after this many deadlines of wall time. _MIN_WAIT: how often a starved worker's CPU time is read.
_WALL_FACTOR = 10.0
_MIN_WAIT = 0.05
# A heavy room (``_Lane.heavy``): each of its ops adds this many times the CPU its slowest legitimate op
# took to the request's deadline, up to _HEAVY_MAX deadlines in all (the most a hang can cost before the
# watchdog cuts it off, once a room has been found heavy).
_HEAVY_MARGIN = 2.0
_HEAVY_MAX = 10.0
# Ops that leave a room's document as it is: queuing one keeps what ``FreshSyncCache`` holds for the room.
_READS = frozenset((Kind.DIFF, Kind.STATE, Kind.DELETE_SET, Kind.FULL, Kind.FOLD, Kind.DOCUMENT))
_FRESH_FROM_MEMORY = metrics.FRESH_SYNCS.labels("memory")
_FRESH_FROM_WORKER = metrics.FRESH_SYNCS.labels("worker")


class RoomSource(Protocol):
    """Where a restarted worker gets its rooms back from (``RoomManager``)."""

    async def rebuild_input(self, room: str) -> tuple[bytes | None, list[bytes]]:
        """The room's stored snapshot and log plus its updates queued for the store, in order."""
        ...

    def room_rebuilt(self, room: str, loaded: Loaded) -> None:
        """The room is in the fresh worker; ``loaded.bad`` names the rows of the last ``rebuild_input``
        that were left out (the source moves the stored ones to quarantine)."""
        ...

    def room_lost(self, room: str) -> None:
        """The room could not be rebuilt: its peers must reconnect (and it reloads from the store)."""
        ...


@functools.lru_cache(maxsize=16384)
def lane_of(room: str, workers: int) -> int:
    """The worker of ``room``: stable across processes and restarts (not Python's salted ``hash``).
    Cached: it runs for every op, and a busy replica's rooms are a working set."""
    return zlib.crc32(room.encode("utf-8", "surrogatepass")) % workers


def default_workers() -> int:
    """One worker per CPU this process may run on, at most 8. The CPUs it may run on, not the machine's: a
    server pinned to one core (``taskset``, a cpuset) that started a worker per core of the machine would
    have them take turns on that core, each request's wake-up and pipe round trip paid for nothing (two
    workers on one core: 11,800-12,500 requests and 96-97 % of the core for the 1,000-room bench, against
    8,100-9,200 and 93 % with one; docs/benchmarks.md, session 21)."""
    return max(1, min(usable_cpus(), 8))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the system tells; else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(slots=True)
class _Pending:
    op: Op
    done: Callable[[Result], None]
    track: bool = True  # a load that joins the worker's rooms (isolation loads rooms it may drop)
    source: object = None  # an apply's source: consecutive applies of one source share a transaction
    patient: bool = False  # isolation's second try of a row: the request gets the watchdog's retry deadline
    finished: bool = False

    def finish(self, result: Result) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self.done(result)
        except Exception:  # a caller's bug must not stop the lane (every later op would wait forever)
            logger.exception("error in the callback of a %s op for room %r", self.op.kind.name, self.op.room)


class _Move:
    """A room's move to a large room's worker (``WorkerPool._move``): the ops held meanwhile."""

    __slots__ = ("held", "landed")

    def __init__(self) -> None:
        self.held: list[_Pending] = []
        self.landed = asyncio.Event()


class _Lane:
    __slots__ = ("busy", "heavy", "index", "process", "queue", "rooms", "row_by_row", "scheduled")

    def __init__(self, index: int, nice: int = 0, idle_seconds: float = 0.0) -> None:
        self.index = index
        self.process = WorkerProcess(index, nice=nice, idle_seconds=idle_seconds)
        self.queue: list[_Pending] = []
        self.busy = False
        self.scheduled = False
        self.rooms: set[str] = set()
        self.row_by_row: set[str] = set()  # rooms to rebuild one row per request (see _rebuild_all)
        # Heavy rooms: room -> CPU seconds of its slowest op that was cut off by the deadline and then
        # completed on the retry (``_recover``). A document grows (a fuzzed room can make every op cost a
        # second); without this, each of its ops would be killed, its worker's rooms rebuilt, and the op
        # accepted on the retry, again and again.
        self.heavy: dict[str, float] = {}


class WorkerPool:
    """``DocumentEngine`` on worker processes. ``start`` before use, ``close`` at shutdown."""

    def __init__(
        self,
        workers: int = 0,
        *,
        document_workers: int = 1,
        deadline: float = 1.0,
        poison_ttl: float = 600.0,
        nice: int = 0,
        fresh_sync_bytes: int = 64 * 1024 * 1024,
        large_room_bytes: int = 0,
        large_room_workers: int = 1,
        idle_document_seconds: float = 0.0,
    ) -> None:
        self.deadline = deadline
        self.fresh_sync = FreshSyncCache(fresh_sync_bytes)
        self.poison = PoisonList(poison_ttl)
        # Rooms' workers cool a room idle for ``idle_document_seconds`` (``documents``; 0: never), and a
        # request to a room that may be cooled gets the time its rebuild takes (``cooling``).
        idle = idle_document_seconds
        self.cooling = CoolingWatch(idle)
        self._lanes = [_Lane(i, nice, idle) for i in range(workers or default_workers())]
        self._document_lanes = [_Lane(len(self._lanes) + i, nice) for i in range(max(document_workers, 0))]
        self._next_document_lane = 0
        # Large rooms (see the module's docstring): 0 bytes keeps every room on its hashed worker.
        self.large_room_bytes = large_room_bytes
        first = len(self._lanes) + len(self._document_lanes)
        count = max(large_room_workers, 0) if large_room_bytes > 0 else 0
        self._large_lanes = [_Lane(first + i, nice, idle) for i in range(count)]
        self._placed: dict[str, _Lane] = {}  # room -> the large room's worker, while it is loaded
        self._sizes: dict[str, int] = {}  # room on its hashed worker -> about how large its document is
        self._moving: dict[str, _Move] = {}  # room -> its move to a large room's worker, under way
        self._source: RoomSource | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._release_scheduled = False  # a release of the allocator's free memory (_release_memory_soon)
        self.requests = 0  # sent to workers, ever (tests check the batching with it)
        self._loop: asyncio.AbstractEventLoop | None = None  # see _running_loop

    def __repr__(self) -> str:
        return f"WorkerPool(workers={len(self._lanes)}, deadline={self.deadline})"

    def describe(self) -> str:
        large = (
            f", {len(self._large_lanes)} for rooms of {self.large_room_bytes / 2**20:g} MiB and more"
            if self._large_lanes
            else ""
        )
        return (
            f"{len(self._lanes)} CRDT worker processes for rooms{large} and {len(self._document_lanes)} for "
            f"document calls (deadline {self.deadline:g}s)"
        )

    @property
    def workers(self) -> int:
        return len(self._lanes)

    def attach(self, source: RoomSource) -> None:
        self._source = source

    async def start(self) -> WorkerPool:
        lanes = [*self._lanes, *self._document_lanes, *self._large_lanes]
        await asyncio.gather(*(lane.process.start(_START_TIMEOUT) for lane in lanes))
        metrics.IDLE_DOCUMENTS.set_function(self.cooling.idle_rooms)
        return self

    def worker_pid(self, room: str) -> int | None:
        """The pid of the worker holding ``room`` (tests kill it)."""
        return self._lane_for(room).process.pid

    def large_worker_pids(self) -> list[int | None]:
        """The pids of the workers kept for large rooms."""
        return [lane.process.pid for lane in self._large_lanes]

    def _lane_for(self, room: str) -> _Lane:
        placed = self._placed.get(room)
        return placed if placed is not None else self._lanes[lane_of(room, len(self._lanes))]

    def document_worker_pids(self) -> list[int | None]:
        """The pids of the workers that run document calls (tests kill them)."""
        return [lane.process.pid for lane in self._document_lanes]

    # -- DocumentEngine ------------------------------------------------------------------------

    def apply(self, room: str, update: bytes, on_applied: OnApplied, *, source: object = None) -> None:
        if update in self.poison:
            asyncio.get_running_loop().call_soon(on_applied, Applied(Refusal.POISON))
            return
        self._grew(room, len(update))  # first: an update that makes the room large is applied where it moves
        self._submit(room, _Pending(Op(Kind.APPLY, room, update), on_applied, source=source))  # type: ignore[arg-type]

    async def load(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Loaded:
        stored = len(snapshot or b"") + sum(map(len, updates))
        self._place(room, stored)
        sent_at = self.cooling.now()
        try:
            result = await self.call(Op(Kind.LOAD, room, snapshot=snapshot, updates=tuple(updates)))
            if isinstance(result, Loaded):
                return result
            if result in (Refusal.CRASHED, Refusal.STALLED):
                logger.warning("room %r: stored rows stop the document engine; loading row by row", room)
                return await isolation.load(self, room, snapshot, updates)
            raise EngineError(result if isinstance(result, Refusal) else Refusal.LIBRARY_FAILURE)
        finally:
            lane = self._lane_for(room)
            if room not in lane.rooms:  # not loaded after all: the next load places it
                self._unplace(room)
            else:
                self.cooling.loaded(room, stored, sent_at)
                if self._large_lanes and room not in self._placed:
                    self._sizes[room] = stored

    async def diff(self, room: str, state_vector: bytes) -> bytes:
        if state_vector == EMPTY_STATE_VECTOR:
            return await self.full_state(room)  # the same bytes (pinned by a test)
        return _bytes(await self.call(Op(Kind.DIFF, room, state_vector)))

    async def state_vector(self, room: str) -> bytes:
        return _bytes(await self.call(Op(Kind.STATE, room)))

    async def delete_set(self, room: str) -> bytes:
        return _bytes(await self.call(Op(Kind.DELETE_SET, room)))

    async def full_state(self, room: str) -> bytes:
        kept = self.fresh_sync.get(room)
        if kept is not None:
            _FRESH_FROM_MEMORY.inc()
            return kept
        ticket = self.fresh_sync.ask(room)
        document = None
        try:
            document = _bytes(await self.call(Op(Kind.FULL, room)))
        finally:
            self.fresh_sync.answered(room, ticket, document)
        _FRESH_FROM_WORKER.inc()
        return document

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        result = await self.call(Op(Kind.FOLD, room, snapshot=snapshot, updates=tuple(updates)))
        if isinstance(result, Folded):
            if room in self._sizes:  # what the room's document holds, by its own encoding
                self._sizes[room] = len(result.snapshot)
            self.cooling.folded(room, len(result.snapshot))
            return result
        if result in (Refusal.CRASHED, Refusal.STALLED):
            logger.warning("room %r: folding stops the document engine; folding row by row", room)
            return await isolation.fold(self, room, snapshot, updates)
        raise EngineError(result if isinstance(result, Refusal) else Refusal.LIBRARY_FAILURE)

    async def compute(self, room: str, call: DocumentCall) -> DocumentAnswer:
        if not self._document_lanes:
            raise EngineError(Refusal.NOT_LOADED)
        lane = self._document_lanes[self._next_document_lane % len(self._document_lanes)]
        self._next_document_lane += 1
        result = await self.call(Op(Kind.DOCUMENT, room, encode_call(call)), lane=lane)
        try:
            return decode_answer(_bytes(result))
        except CallError as exc:
            logger.error("room %r: a document call got a malformed answer (%s)", room, exc, extra={"room": room})
            raise EngineError(Refusal.LIBRARY_FAILURE) from exc

    def adopt(self, room: str) -> None:
        """Count ``room``, loaded by isolation update by update, among its worker's rooms (rebuilt after a
        restart) as a tracked load would."""
        self._lane_for(room).rooms.add(room)

    async def unload(self, room: str) -> None:
        move = self._moving.get(room)
        if move is not None:  # let it land first: then the room is in one worker, and unloaded from there
            await move.landed.wait()
        lane = self._lane_for(room)
        self._unplace(room)  # its next load places it again, by its size then
        self.cooling.unloaded(room)
        lane.rooms.discard(room)
        lane.heavy.pop(room, None)
        await self.call(Op(Kind.UNLOAD, room), lane=lane)

    def _place(self, room: str, stored_bytes: int) -> None:
        """Put ``room`` on a large room's worker (the least loaded) if its stored rows are that large."""
        if not self._large_lanes or stored_bytes < self.large_room_bytes or room in self._placed:
            return
        lane = self._least_loaded_large_lane()
        self._place_on(room, lane)
        logger.info(
            "room %r: %.1f MiB stored; it loads in CRDT worker %d, kept for large rooms",
            room,
            stored_bytes / 2**20,
            lane.index,
            extra={"room": room},
        )

    def _place_on(self, room: str, lane: _Lane) -> None:
        self._placed[room] = lane
        metrics.LARGE_ROOMS.inc()

    def _unplace(self, room: str) -> None:
        self._sizes.pop(room, None)
        if self._placed.pop(room, None) is not None:
            metrics.LARGE_ROOMS.dec()

    def _grew(self, room: str, added: int) -> None:
        size = self._sizes.get(room)
        if size is None:  # not tracked: on a large room's worker already, not loaded, or no such workers
            return
        if size + added < self.large_room_bytes:
            self._sizes[room] = size + added
            return
        del self._sizes[room]
        move = self._moving[room] = _Move()
        task = self._running_loop().create_task(self._move(room, move))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _move(self, room: str, move: _Move) -> None:
        """Move a loaded room that grows large from its hashed worker to a large room's worker. Ops for the
        room queued from now on (the update that makes it large first) wait in ``move.held`` (``_submit``):
        the whole document encoded by the old worker holds every op queued before them, the new worker
        loads it, and then they follow."""
        old = self._lane_for(room)
        try:
            document = await self.call(Op(Kind.FULL, room), lane=old)
            target = self._least_loaded_large_lane()
            if isinstance(document, bytes) and room in old.rooms:
                loaded = await self.call(Op(Kind.LOAD, room, snapshot=document), lane=target)
                if isinstance(loaded, Loaded) and not loaded.bad:
                    self._place_on(room, target)
                    old.rooms.discard(room)
                    old.heavy.pop(room, None)
                    self._submit(room, _Pending(Op(Kind.UNLOAD, room), _ignore), old)
                    logger.info(
                        "room %r is growing large (%.1f MiB before its latest update): moved to CRDT worker %d, "
                        "kept for large rooms",
                        room,
                        len(document) / 2**20,
                        target.index,
                        extra={"room": room},
                    )
                    return
                target.rooms.discard(room)
                self._submit(room, _Pending(Op(Kind.UNLOAD, room), _ignore), target)
            logger.warning("room %r grew large but stays on its CRDT worker until it reloads (%r)", room, document)
        finally:
            del self._moving[room]
            for pending in move.held:  # in order, to wherever the room now is
                self._submit(room, pending)
            move.landed.set()

    def _least_loaded_large_lane(self) -> _Lane:
        return min(self._large_lanes, key=lambda lane: len(lane.rooms))

    async def close(self) -> None:
        self._closed = True
        metrics.IDLE_DOCUMENTS.set_function(lambda: 0)  # and let go of this pool
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane in [*self._lanes, *self._document_lanes, *self._large_lanes]:
            for pending in lane.queue:
                _refuse(pending, Refusal.NOT_LOADED)
            lane.queue.clear()
            await lane.process.kill()

    # -- requests ------------------------------------------------------------------------------

    async def call(self, op: Op, *, track: bool = True, lane: _Lane | None = None, patient: bool = False) -> Result:
        """Queue one op and wait for its result (a Refusal when its worker could not handle it).
        ``lane``: a worker other than the room's (document calls); ``patient``: the request carrying it
        gets the longer deadline of the watchdog's retry (isolation's second try of a suspect row)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def done(result: Result) -> None:
            if not future.done():
                future.set_result(result)

        self._submit(op.room, _Pending(op, done, track, patient=patient), lane)
        return await future

    def _submit(self, room: str, pending: _Pending, lane: _Lane | None = None) -> None:
        if self._closed:
            _refuse(pending, Refusal.NOT_LOADED)
            return
        if pending.op.kind not in _READS:  # an unload too: a later load must not be answered from before
            self.fresh_sync.changed(room)
        if lane is None:
            move = self._moving.get(room)
            if move is not None:
                move.held.append(pending)
                return
            lane = self._lane_for(room)
        lane.queue.append(pending)
        if not lane.busy and not lane.scheduled:
            # Sent at the end of this tick, with everything else queued for the worker meanwhile.
            lane.scheduled = True
            self._running_loop().call_soon(self._flush, lane)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The pool's loop, found once: on Python 3.11 every ``get_running_loop()`` is a ``getpid()``
        system call, and the pool schedules a flush and a task per lane per tick."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _flush(self, lane: _Lane) -> None:
        lane.scheduled = False
        if lane.busy or not lane.queue or self._closed:
            return
        cut = _batch_end(lane.queue)
        batch, lane.queue = lane.queue[:cut], lane.queue[cut:]
        join_runs(batch)
        lane.busy = True
        task = self._running_loop().create_task(self._run(lane, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, lane: _Lane, batch: list[_Pending]) -> None:
        try:
            try:
                patient = any(pending.patient for pending in batch)
                results = await self._send(lane, [pending.op for pending in batch], retry=patient)
            except (WorkerDied, TimeoutError) as exc:
                await self._recover(lane, batch, exc)
            else:
                for pending, result in zip(batch, results, strict=True):
                    self._deliver(lane, pending, result)
        except Exception:
            logger.exception("CRDT worker %d: request failed unexpectedly", lane.index)
        finally:
            for pending in batch:  # never leave a caller waiting
                if not pending.finished:
                    _refuse(pending, Refusal.NOT_LOADED)
            lane.busy = False
            if lane.queue and not self._closed:
                self._flush(lane)

    def deadline_for(
        self, ops: list[Op], *, retry: bool = False, heavy: dict[str, float] | None = None, rebuilds: int = 0
    ) -> float:
        """CPU seconds the worker may spend on ``ops``: see ``_BYTES_PER_DEADLINE`` and ``_Lane.heavy``.
        ``rebuilds``: bytes of the cooled rooms the worker may have to rebuild first, or be cooling as the
        request arrives (``cooling``)."""
        deadline = self.deadline * (
            1 + sum(op.size for op in ops) / _BYTES_PER_DEADLINE + (len(ops) - 1) / _OPS_PER_DEADLINE
        )
        if any(op.kind in (Kind.LOAD, Kind.FOLD, Kind.DOCUMENT) for op in ops):
            deadline *= _LOAD_FACTOR
        if rebuilds:
            deadline += self.deadline * rebuilds / _REBUILD_BYTES_PER_DEADLINE
        if heavy:
            extra = _HEAVY_MARGIN * sum(heavy.get(op.room, 0.0) for op in ops)
            deadline += min(extra, self.deadline * _HEAVY_MAX)
        return deadline * (_RETRY_FACTOR if retry else 1.0)

    async def _send(self, lane: _Lane, ops: list[Op], *, retry: bool = False) -> list[Result]:
        started = time.perf_counter()
        self.requests += 1
        # The rooms it may rebuild for these ops, and the room it may be cooling as they arrive.
        rebuilds = self.cooling.sent(ops) + self.cooling.may_be_cooling(lane.rooms)
        deadline = self.deadline_for(ops, retry=retry, heavy=lane.heavy, rebuilds=rebuilds)
        body, strings = await _within_deadline(lane.process, lane.process.request(encode_ops(ops)), deadline)
        if len(body) + sum(map(len, strings)) >= RELEASE_AFTER_BYTES:
            self._release_memory_soon()
        try:
            # A board's snapshot or sync came out of line (``codec``), already its own bytes: not copied here.
            results = decode_results([op.kind for op in ops], body, strings)
        except CodecError as exc:
            raise WorkerDied(f"CRDT worker {lane.index} answered garbage ({exc})") from exc
        metrics.CRDT_REQUEST_SECONDS.observe(time.perf_counter() - started)
        return results

    def _release_memory_soon(self) -> None:
        """Once the copies of a large answer are gone (a second later: a board synced to several clients
        gives several), hand the allocator's free memory back, in a thread (``native_memory``)."""
        if self._release_scheduled:
            return
        self._release_scheduled = True

        def release() -> None:
            self._release_scheduled = False
            if not self._closed:
                with contextlib.suppress(RuntimeError):  # the loop's executor is shutting down
                    self._running_loop().run_in_executor(None, release_free_memory)

        self._running_loop().call_later(_RELEASE_DELAY, release)

    def _deliver(self, lane: _Lane, pending: _Pending, result: Result) -> None:
        if pending.op.kind is Kind.LOAD and pending.track and isinstance(result, Loaded):
            lane.rooms.add(pending.op.room)
        pending.finish(result)

    # -- the watchdog's recovery ---------------------------------------------------------------

    async def _recover(self, lane: _Lane, batch: list[_Pending], exc: BaseException) -> None:
        """Replace the worker, rebuild its rooms, then retry the batch op by op to find the poison."""
        stalled = isinstance(exc, TimeoutError)
        logger.error(
            "CRDT worker %d %s (%d ops in the request); restarting it",
            lane.index,
            "did not answer within its deadline" if stalled else f"died: {exc}",
            len(batch),
        )
        await self._restart(lane)
        convicted: set[str] = set()  # rooms with an update convicted in this recovery
        given_up: set[str] = set()
        for pending in batch:
            room = pending.op.room
            if room in given_up:
                _refuse(pending, Refusal.NOT_LOADED)
                continue
            if len(batch) == 1 and pending.op.kind in (Kind.LOAD, Kind.FOLD):
                # Nothing else was in the request: the rows killed the worker. Their caller replays them
                # one by one (``isolation``, which tries a suspect row twice), so a retry of the whole
                # load would only spend the retry's deadline again (10 s of CPU for a 1 s deadline).
                _refuse(pending, Refusal.STALLED if stalled else Refusal.CRASHED)
                continue
            cpu_before = lane.process.cpu_seconds()
            try:
                [result] = await self._send(lane, [pending.op], retry=True)
            except (WorkerDied, TimeoutError) as again:
                refusal = Refusal.STALLED if isinstance(again, TimeoutError) else Refusal.CRASHED
                if self._room_is_the_poison(lane, pending, convicted):
                    # A read of the document, or a second update of the same room, kills fresh workers:
                    # the room's rebuilt document is what kills them, not what its clients send. Give the
                    # room up (its peers reconnect, and its next load isolates its stored rows) rather than
                    # convict each client in turn (4400 ends a y-websocket client's retries).
                    logger.error("room %r: its document kills the CRDT worker; dropping it", room, extra={"room": room})
                    given_up.add(room)
                    self._lose(lane, room, again)
                    _refuse(pending, Refusal.NOT_LOADED)
                    await self._restart(lane)
                    continue
                if pending.op.kind is Kind.APPLY:
                    convicted.add(room)
                    self.poison.add(pending.op.payload)
                logger.warning(
                    "CRDT worker %d: a %s op for room %r %s it again; refused",
                    lane.index,
                    pending.op.kind.name.lower(),
                    pending.op.room,
                    refusal.label,
                    extra={"room": pending.op.room},
                )
                _refuse(pending, refusal)
                await self._restart(lane)
            else:
                if not pending.track and _refusal_of(result) is Refusal.NOT_LOADED:
                    # An isolation op on a room the fresh worker does not hold (isolation rooms are not
                    # rebuilt): it cannot be retried here. This is its first strike; isolation puts the
                    # room back and tries it again before convicting it (``isolation._try_row``).
                    _refuse(pending, Refusal.STALLED if stalled else Refusal.CRASHED)
                    continue
                if pending.track:
                    self._note_heavy(lane, pending.op, cpu_before)
                self._deliver(lane, pending, result)

    def _note_heavy(self, lane: _Lane, op: Op, cpu_before: float | None) -> None:
        """Remember ``op``'s room as heavy if the op, legitimate after all (it completed on the retry),
        used more than half the deadline it had the first time."""
        cpu_after = lane.process.cpu_seconds()
        if cpu_before is None or cpu_after is None or not op.room:
            return
        used = cpu_after - cpu_before
        if used > self.deadline_for([op], heavy=lane.heavy) / 2 and used > lane.heavy.get(op.room, 0.0):
            logger.warning(
                "room %r: a %s op needed %.2fs of CPU; the room's requests get a longer deadline",
                op.room,
                op.kind.name.lower(),
                used,
                extra={"room": op.room},
            )
            lane.heavy[op.room] = used

    @staticmethod
    def _room_is_the_poison(lane: _Lane, pending: _Pending, convicted: set[str]) -> bool:
        """Whether an op that killed a fresh worker again says more about its room than about itself: a
        read (diff, state, ...) of a loaded room carries no client bytes, and a room whose second update
        kills the worker is more likely broken than attacked twice in one batch. Loads and folds are not
        judged here: their callers isolate the stored rows."""
        if not pending.track or pending.op.room not in lane.rooms:
            return False
        if pending.op.kind is Kind.APPLY:
            return pending.op.room in convicted
        return pending.op.kind in (Kind.DIFF, Kind.STATE, Kind.FULL, Kind.DELETE_SET)

    async def _restart(self, lane: _Lane) -> None:
        """A fresh worker holding every room of the lane again. A room whose own rows kill the fresh
        worker is given up (its next load finds and quarantines them) and the rebuild starts over, since
        the rooms rebuilt before it died with that worker."""
        self.fresh_sync.clear()  # the rebuilt rooms are what they say, perhaps without a row they held
        while not self._closed:
            await lane.process.kill()
            metrics.CRDT_WORKER_RESTARTS.inc()
            try:
                await lane.process.start(_START_TIMEOUT)
            except WorkerDied as exc:
                logger.error("%s; trying again", exc)
                await asyncio.sleep(0.5)
                continue
            if await self._rebuild_all(lane):
                return

    async def _rebuild_all(self, lane: _Lane) -> bool:
        """False if a rebuild killed the worker. A room whose rows killed it when loaded together is
        rebuilt row by row on the next pass (``lane.row_by_row``), as its rows were applied live: the
        library's reads of freed memory can make rows that applied one by one crash when replayed in one
        load. A room that kills the worker row by row too is given up (dropped from the lane)."""
        source = self._source
        for room in sorted(lane.rooms):
            try:
                if source is None:
                    raise EngineError(Refusal.NOT_LOADED)
                snapshot, updates = await source.rebuild_input(room)
                if room in lane.row_by_row:
                    result = await self._rebuild_row_by_row(lane, room, snapshot, updates)
                else:
                    ops = [Op(Kind.LOAD, room, snapshot=snapshot, updates=tuple(updates))]
                    [result] = await self._send(lane, ops)
                if not isinstance(result, Loaded):
                    raise EngineError(Refusal.NOT_LOADED)
            except (WorkerDied, TimeoutError) as exc:
                if room in lane.row_by_row:
                    lane.row_by_row.discard(room)
                    self._lose(lane, room, exc)
                else:
                    logger.warning(
                        "room %r: its rows stop the CRDT worker when loaded together; rebuilding it row by row",
                        room,
                        extra={"room": room},
                    )
                    lane.row_by_row.add(room)
                return False
            except Exception as exc:  # the store failed, or the engine refused: this room only
                self._lose(lane, room, exc)
                continue
            if result.bad:
                logger.warning("room %r rebuilt without %d rows it could not apply", room, len(result.bad))
            if source is not None:
                source.room_rebuilt(room, result)
        lane.row_by_row.clear()
        return True

    async def _rebuild_row_by_row(
        self, lane: _Lane, room: str, snapshot: bytes | None, updates: Sequence[bytes]
    ) -> Result:
        [loaded] = await self._send(lane, [Op(Kind.LOAD, room, snapshot=snapshot)])
        if not isinstance(loaded, Loaded):
            return loaded
        bad = list(loaded.bad)  # the snapshot, if it was left out
        for index, update in enumerate(updates):
            [applied] = await self._send(lane, [Op(Kind.APPLY, room, update)])
            if isinstance(applied, Applied) and applied.refusal is not None:
                bad.append(BadRow(index, applied.refusal))
        return _bytes_or_refusal(await self._send(lane, [Op(Kind.STATE, room)]), Loaded(loaded.state_vector, bad))

    def _lose(self, lane: _Lane, room: str, exc: BaseException) -> None:
        logger.error("room %r could not be rebuilt in CRDT worker %d (%r)", room, lane.index, exc)
        lane.rooms.discard(room)
        lane.heavy.pop(room, None)
        self._unplace(room)
        if self._source is not None:
            self._source.room_lost(room)


async def _within_deadline(process: WorkerProcess, answer: Awaitable[Answer], deadline: float) -> Answer:
    """``answer``, or TimeoutError once the worker has spent ``deadline`` seconds of CPU time on it.

    CPU time, not wall time: on a machine kept busy by other work (or by the very hangs a fuzz run sends),
    a worker that is only waiting for a core is not stalled, and killing it costs its rooms a rebuild,
    which loads the machine further (seen in a fuzz run at load average 5 on 2 cores: all four workers
    killed within the same second, and the retries of their ops answering in time). A worker looping burns CPU
    and is cut off after ``deadline`` of it; one that uses none (blocked) after ``_WALL_FACTOR`` times
    the deadline of wall time. Without /proc, the wall-clock deadline it is."""
    task = asyncio.ensure_future(answer)
    loop = asyncio.get_running_loop()
    started_cpu = process.cpu_seconds()
    give_up_at = loop.time() + deadline * _WALL_FACTOR
    wait = deadline
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                return task.result()
            used = process.cpu_seconds()
            if started_cpu is None or used is None:
                break
            cpu_left, wall_left = deadline - (used - started_cpu), give_up_at - loop.time()
            if cpu_left <= 0 or wall_left <= 0:
                break
            wait = max(min(cpu_left, wall_left), _MIN_WAIT)
    except BaseException:
        task.cancel()
        raise
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, WorkerDied):
        await task
    raise TimeoutError(f"CRDT worker {process.index} used its deadline ({deadline:g}s of CPU)")


def _batch_end(queue: list[_Pending]) -> int:
    """How many of ``queue``'s first ops go in one request (``_MAX_BATCH_OPS``, ``_MAX_BATCH_BYTES``)."""
    size = 0
    for index, pending in enumerate(queue[:_MAX_BATCH_OPS]):
        size += pending.op.size
        if size > _MAX_BATCH_BYTES and index > 0:
            return index
    return min(len(queue), _MAX_BATCH_OPS)


def join_runs(batch: list[_Pending]) -> None:
    """Mark each apply that follows an apply of the same room and source as joined to it (one
    transaction in the worker). Retried ops go one per request, where joining has no effect."""
    previous: _Pending | None = None
    for pending in batch:
        op = pending.op
        if (
            op.kind is Kind.APPLY
            and previous is not None
            and previous.op.kind is Kind.APPLY
            and previous.op.room == op.room
            and pending.source is not None
            and pending.source is previous.source
        ):
            pending.op = dataclasses.replace(op, joined=True)
        previous = pending


def _bytes_or_refusal(results: list[Result], loaded: Loaded) -> Result:
    """``loaded`` with the state vector of ``results`` (a STATE answer), or the refusal it holds."""
    [state] = results
    return Loaded(state, loaded.bad) if isinstance(state, bytes) else state


def _refusal_of(result: Result) -> Refusal | None:
    if isinstance(result, Applied):
        return result.refusal
    return result if isinstance(result, Refusal) else None


def _ignore(result: Result) -> None:
    """The result of an unload that no one waits for (a moved room leaving its old worker)."""


def _refuse(pending: _Pending, refusal: Refusal) -> None:
    pending.finish(Applied(refusal) if pending.op.kind is Kind.APPLY else refusal)


def _bytes(result: Result) -> bytes:
    if isinstance(result, bytes):
        return result
    raise EngineError(result if isinstance(result, Refusal) else Refusal.LIBRARY_FAILURE)
