"""A room's broadcasts, written to its peers a slice of time per event-loop turn.

Writing one message to a room's peers is one socket write each, a few microseconds apiece: nothing for a
room of four, but for the conference (one board, 3,000 viewers) 15-26 ms in one turn of the loop, during
which no other room was served, no socket read and no ping answered (``bench/turn_gaps``; 110 such turns in
a 3,000-reader run, docs/benchmarks.md, session 21). So a broadcast is written to as many peers as fit in
``SLICE`` seconds, and to the rest in the turns after, each after the loop has polled its sockets again.

A room's broadcasts are written in the order they were sent, each to all of its peers before the next
starts: a peer gets them in that order. The peers of a broadcast are those in the room when it was sent;
one that joins meanwhile gets the document from its own sync.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

SLICE = 0.002
"""Seconds of writes per turn for one room's broadcasts: with the flush queue's 3 ms (``broadcasts``) and a
poll's reads, a turn stays under 10 ms."""

_CHECK_EVERY = 32  # peers written between two looks at the clock (a look costs about as much as a write)


class Recipient(Protocol):
    def send(self, message: bytes, frame: bytes | None = None) -> None: ...


@dataclass(slots=True)
class _Broadcast:
    message: bytes
    frame: bytes | None  # the message framed once for every peer (``transport.binary_frame``), or None
    peers: tuple[Recipient, ...]
    written: int = 0  # how many of ``peers`` have it


class Outbox:
    """One room's broadcasts being written. ``on_written(seconds)`` is called each time everything sent has
    been written, with the seconds the writes took (across turns), while its owner lives: the outbox holds
    it weakly, so that a room and its outbox make no reference cycle (a room let go is freed at once, not
    at the collector's next full pass: the soak's server grew twice as fast with the cycle)."""

    __slots__ = ("_clock", "_handle", "_on_written", "_queue", "_spent", "_writing_now")

    def __init__(
        self, on_written: Callable[[float], None], clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._on_written = weakref.WeakMethod(on_written) if inspect.ismethod(on_written) else lambda: on_written
        self._clock = clock
        self._queue: collections.deque[_Broadcast] = collections.deque()
        self._handle: asyncio.Handle | None = None
        self._spent = 0.0
        self._writing_now = False  # inside _write: a send() from a peer's write (a close) only queues

    @property
    def writing(self) -> bool:
        """Whether a broadcast is still being written (its next slice is due in a coming turn)."""
        return bool(self._queue)

    def send(self, message: bytes, frame: bytes | None, peers: tuple[Recipient, ...]) -> None:
        """Write ``message`` to ``peers``: now, as far as a slice goes, or after the broadcasts before it."""
        if not self._queue and len(peers) <= _CHECK_EVERY:
            # A room of a few peers (nearly every room): written at once, never long enough to count. The
            # queue and the clock cost this path 2 % of the core at 8,000 broadcasts a second.
            for peer in peers:
                peer.send(message, frame)
            return
        self._queue.append(_Broadcast(message, frame, peers))
        if self._handle is None and not self._writing_now:
            self._write(SLICE)

    def write_all(self) -> None:
        """Write everything still queued now, whatever it takes (the room is closing)."""
        if self._handle is not None:
            self._handle.cancel()
        if self._queue:
            self._write(float("inf"))

    def _continue(self) -> None:
        self._write(SLICE)

    def _write(self, budget: float) -> None:
        self._handle = None
        self._writing_now = True
        try:
            self._write_some(budget)
        finally:
            self._writing_now = False

    def _write_some(self, budget: float) -> None:
        clock = self._clock
        started = clock()
        until = started + budget
        queue = self._queue
        while queue:
            broadcast = queue[0]
            message, frame, peers = broadcast.message, broadcast.frame, broadcast.peers
            count = len(peers)
            index = broadcast.written
            while index < count:
                peers[index].send(message, frame)
                index += 1
                if not index % _CHECK_EVERY and clock() > until:
                    broadcast.written = index
                    if index < count or len(queue) > 1:
                        self._spent += clock() - started
                        self._handle = asyncio.get_running_loop().call_soon(self._continue)
                        return
            queue.popleft()
        spent, self._spent = self._spent + clock() - started, 0.0
        on_written = self._on_written()
        if on_written is not None:
            on_written(spent)
