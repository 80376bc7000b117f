"""What the worker pool knows of the rooms its workers may have cooled.

A worker drops the document of a room that has had no update for ``idle_seconds`` and rebuilds it from
the room's encoded form at its next update (``documents``, ``worker``). A rebuild took 6 ms for a tldraw
board of 1,000 records and 0.4 s for one of 100,000 (44 MiB); one that replays several entries, 18 ms
and 0.94 s. The watchdog gives a request a deadline from what it carries (``WorkerPool.deadline_for``); an update of
a few bytes to a cooled board carries nothing that says "rebuild 44 MiB first", and would be cut off as a
hang. So the pool notes when it last sent each room an update, and about how large the room is, and a
request to a room that may be cooled gets the time its rebuild may take (``pool._REBUILD_BYTES_PER_DEADLINE``).

The pool sends an update before the worker applies it, so the worker cools a room no sooner than this
watch expects it to: a room taken for cooled when it is not only gets a longer deadline. (A read can
rebuild a cooled room too, which this watch does not see: the same.)

Cooling takes time too: a worker cools a room between requests, and a request that arrives meanwhile
waits for it, with its CPU time counted against the request (a board of 100,000 records took 1.7 s to
cool on a slow machine: letting go of the document, then compressing its snapshot). So every request to a
worker holding a large room that may be cooling gets that room's allowance as well (``may_be_cooling``).
The pool cannot tell when the cooling is over (the worker cools only once no request waits), so the
allowance stays while the room stays idle: on that worker, a hang is cut off that much later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable

from collab_server.crdt.codec import Kind, Op

# Rooms smaller than this cool in tens of milliseconds (about 40 ms a MiB on a slow machine): no allowance.
LARGE_TO_COOL = 1024 * 1024


class CoolingWatch:
    """Per room: when the pool last sent it an update, and its size (stored bytes at load, plus the bytes of
    the updates sent since, or the size of its last fold's snapshot plus those since)."""

    __slots__ = ("_bytes", "_clock", "_large", "_updated", "idle_seconds")

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds  # 0: workers never cool a room, and this watch records nothing
        self._clock = clock
        self._updated: dict[str, float] = {}
        self._bytes: dict[str, int] = {}
        self._large: set[str] = set()  # rooms of LARGE_TO_COOL bytes and more

    def now(self) -> float:
        return self._clock()

    def loaded(self, room: str, stored_bytes: int, sent_at: float) -> None:
        """``room`` is loaded, from a request sent at ``sent_at`` (``now()``): its worker counts the idle
        time from when it loaded the room, after that, so a cooling under way is never expected too late."""
        if self.idle_seconds > 0:
            self._updated[room] = sent_at
            self._size(room, stored_bytes)

    def _size(self, room: str, size: int) -> None:
        self._bytes[room] = size
        if size >= LARGE_TO_COOL:
            self._large.add(room)
        else:
            self._large.discard(room)

    def sent(self, ops: Iterable[Op]) -> int:
        """``ops`` go to a worker now: the bytes of the cooled rooms it may rebuild for them (each room
        once), and their updates keep their rooms' documents for the idle time again. (A cooled room is
        compacted without a rebuild, when it can be: a fold does not count as an update.)"""
        if not self._updated:
            return 0
        now = self._clock()
        cooled_before = now - self.idle_seconds
        rebuilds: set[str] = set()
        total = 0
        for op in ops:
            updated = self._updated.get(op.room)
            if updated is None:  # not loaded (yet), or cooling is off
                continue
            if updated <= cooled_before and op.room not in rebuilds:
                rebuilds.add(op.room)
                total += self._bytes[op.room]
            if op.kind is Kind.APPLY:
                self._updated[op.room] = now
                self._size(op.room, self._bytes[op.room] + op.size)
        return total

    def may_be_cooling(self, rooms: Container[str]) -> int:
        """The bytes of the largest room of ``rooms`` (one worker's) that its worker may be cooling now, of
        ``LARGE_TO_COOL`` bytes or more; 0 if none."""
        if not self._large:
            return 0
        cooled_before = self._clock() - self.idle_seconds
        return max(
            (self._bytes[room] for room in self._large if room in rooms and self._updated[room] <= cooled_before),
            default=0,
        )

    def folded(self, room: str, snapshot_bytes: int) -> None:
        if room in self._bytes:
            self._size(room, snapshot_bytes)

    def idle_rooms(self) -> int:
        """Rooms that may be cooled now (``collab_idle_documents``: read in the metrics' thread, hence the
        copy, which holds the GIL)."""
        cooled_before = self._clock() - self.idle_seconds
        return sum(1 for updated in list(self._updated.values()) if updated <= cooled_before)

    def unloaded(self, room: str) -> None:
        self._updated.pop(room, None)
        self._bytes.pop(room, None)
        self._large.discard(room)
