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


class Flushable(Protocol):
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
        """Flush ``room`` in a coming turn (it keeps track of whether it is queued already)."""
        self._due.append(room)
        if self._handle is None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._handle = self._loop.call_soon(self._flush_some)

    def _flush_some(self) -> None:
        self._handle = None
        until = self._clock() + self._budget
        due = self._due
        while due:
            due.popleft().flush()
            if self._clock() >= until:
                break
        if due and self._loop is not None:
            # call_soon runs it in the next turn, not this one: the loop polls its sockets in between.
            self._handle = self._loop.call_soon(self._flush_some)
