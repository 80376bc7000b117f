"""Rooms waiting to broadcast, flushed a few milliseconds' worth per event-loop turn.

A room gathers the updates its engine accepts in one turn and broadcasts them in the next (``Room.flush``):
one merged message, written to each of its peers. Writing is most of the cost, and on a loopback or a fast
network most of a write is the kernel's. When many rooms have something to broadcast at once (a burst of
arrivals: a client process pausing and then sending all it held, a network hiccup), flushing all of them in
one turn made the turn long: at 8,000 edits/s into 1,000 rooms, 46-96 turns of 10-21 ms on the loop's own
CPU per 10-second run (``bench/turn_gaps``), during which no socket was read and no ping answered.

So rooms queue here, and each turn flushes them in the order they queued until ``budget`` seconds have
gone; the rest wait for the next turn, after the loop has polled its sockets again. A room is never
flushed later than one more turn per ``budget`` of flushes queued before it, and the order of every
room's own messages is unchanged.

A room whose broadcast takes long to write (a hot room: a thousand readers, a write each; ``outbox`` writes
it a slice per turn) then rests twice as long as the writing took before its next flush (``rest``,
``REST_AFTER``, ``REST_FACTOR``). What arrives meanwhile goes out merged, in one message per reader, so a hot
room broadcasts at most a third of the time, leaving the rest of the loop to every other room, and a
writer's burst costs a few broadcasts, not one per worker answer. Without the rest, a hot room settled into
one of two regimes run to run: big batches, or batches so small that each update cost nearly a broadcast of
its own (2,500 against 9,000 updates a second to 1,000 readers, docs/benchmarks.md, session 20). Resting
only as long as the writing still let it fall into the small regime (6,700 against 13,000, session 21).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Protocol

TURN_BUDGET = 0.003
"""Seconds of flushing per turn. At 3 ms, turns of the loop's own work over 10 ms in the 1,000-room bench
went from 46-63 to 4-11 per run (SQLite: 127-132 to 4-10), the delivery latency unchanged within the
run-to-run noise. Near saturation (the server at 80 % of its core) they went from 140 to 48 per run, and
the median latency rose by a tenth (flushes wait behind the next turn's reading); 6 ms gave 69 per run
and no rise. 3 ms keeps turns under 10 ms (docs/benchmarks.md, session 19)."""


REST_AFTER = 0.001
"""A broadcast whose writing took longer than this (seconds) makes its room rest before the next flush. A
room of a few peers writes in tens of microseconds and never rests."""

REST_FACTOR = 2.0
"""How long a room rests after a long broadcast, in multiples of the time its writing took. At 2, an update
to 1,000 readers arriving in a rest waits up to twice a broadcast's ~6 ms (paced at 50 a second: p99 19-25
ms against 12-13 at 1), and the room's throughput no longer falls into the small-batch regime: 15,600-16,800
updates a second in four runs of four, against 6,700-13,000 at 1 (docs/benchmarks.md, session 21)."""


class Flushable(Protocol):
    rest_ends: float
    """When the room may flush again after a long broadcast (``Broadcasts``' clock; ``rest`` sets it, 0 to
    start)."""

    def flush(self) -> None: ...


class Broadcasts:
    """The rooms with a flush due, shared by all the rooms of one event loop (``Rooms``)."""

    def __init__(self, budget: float = TURN_BUDGET, clock: Callable[[], float] = time.perf_counter) -> None:
        self._budget = budget
        self._clock = clock
        self._due: collections.deque[Flushable] = collections.deque()
        self._handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # found once (``Room._call_soon`` says why)

    def __len__(self) -> int:
        return len(self._due)

    def add(self, room: Flushable) -> None:
        """Flush ``room`` in a coming turn (it keeps track of whether it is queued already), or once its
        rest after a long broadcast is over."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if room.rest_ends:
            wait = room.rest_ends - self._clock()
            room.rest_ends = 0.0  # its queueing is decided: a later add() is queued at once
            if wait > 0:
                self._loop.call_later(wait, self._queue, room)
                return
        self._queue(room)

    def rest(self, room: Flushable, seconds: float) -> None:
        """Writing ``room``'s last broadcast took ``seconds`` (across turns, ``outbox``): past ``REST_AFTER``,
        the room's next flush waits ``REST_FACTOR`` times as long from now."""
        if seconds > REST_AFTER:
            room.rest_ends = self._clock() + REST_FACTOR * seconds

    def _queue(self, room: Flushable) -> None:
        self._due.append(room)
        if self._handle is None and self._loop is not None:
            self._handle = self._loop.call_soon(self._flush_some)

    def _flush_some(self) -> None:
        self._handle = None
        clock = self._clock
        until = clock() + self._budget
        due = self._due
        while due:
            room = due.popleft()
            room.flush()
            if clock() >= until:
                break
        if due and self._loop is not None:
            # call_soon runs it in the next turn, not this one: the loop polls its sockets in between.
            self._handle = self._loop.call_soon(self._flush_some)
