"""The event loop's lag, sampled: every ``interval`` a timer asks to run, and how late it ran is how
long other work held the loop (one long turn, or many short ones back to back). Every socket, room and
the store's commit replies wait that long, so this is the first number to look at when latency grows.
Exported as ``collab_loop_lag_seconds``; the cost is one timer callback per interval. The app samples
while it serves: from the end of its start-up (stores open, workers running) until its shutdown begins.

A late timer has two causes that call for different fixes: the loop ran our code for that long (a stall:
a bug to find), or the loop's thread was ready but waiting for a CPU that other processes held (the
replica is short of CPU: give it more, or fewer rooms). On Linux the kernel counts how long a thread has
waited in the run queue (``/proc/thread-self/schedstat``), so each sample also gives its lag less the
waits of that interval, ``collab_loop_lag_running_seconds``: the lag the process made itself. It is a
lower bound: a wait early in the interval, before the timer was due, is subtracted as well. On a machine
where the CRDT workers share the loop's core (the benchmarks pin them together) most of the difference
is the workers' turns.

Beside it, ``collab_loop_tasks``: the tasks alive on the loop, counted when scraped. An idle websocket
connection holds none (``collab_server.session``), so it follows work in flight, and a number that grows
with the connections means tasks are held (or leaked) per connection.
"""

from __future__ import annotations

import asyncio
import logging
import os

from collab_server import metrics

logger = logging.getLogger(__name__)

_SCHEDSTAT = "/proc/thread-self/schedstat"  # "<ns on a CPU> <ns waiting for one> <timeslices>"


class RunQueueWait:
    """Seconds the calling thread has spent ready to run but waiting for a CPU, as the kernel counts them.
    Opened on the thread it measures; ``seconds()`` is None where the kernel does not say (not Linux)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(_SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self._fd = None

    def seconds(self) -> float | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoopLagMonitor:
    """Samples the running loop's lag until ``close``."""

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._waits: RunQueueWait | None = None
        self.worst = 0.0  # the largest lag seen, for tests and benchmarks
        self.samples = 0
        self.over_10ms = 0
        # The same for the lag less the thread's waits for a CPU (None where those are not known).
        self.worst_running: float | None = None
        self.running_over_10ms = 0

    def start(self) -> LoopLagMonitor:
        loop = asyncio.get_running_loop()
        self._waits = RunQueueWait()  # here, on the loop's thread
        self._schedule(loop, self._waits.seconds())
        metrics.LOOP_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        return self

    def _schedule(self, loop: asyncio.AbstractEventLoop, waited: float | None) -> None:
        """The next sample, due in an interval; ``waited``: the thread's run-queue waits so far."""
        due = loop.time() + self._interval
        self._handle = loop.call_at(due, self._sample, loop, due, waited)

    def _sample(self, loop: asyncio.AbstractEventLoop, due: float, waited_before: float | None) -> None:
        lag = max(loop.time() - due, 0.0)
        self.worst = max(self.worst, lag)
        self.samples += 1
        self.over_10ms += lag > 0.01
        metrics.LOOP_LAG_SECONDS.observe(lag)
        waited = self._waits.seconds() if self._waits is not None else None
        if waited is not None and waited_before is not None:
            running = max(lag - (waited - waited_before), 0.0)
            self.worst_running = max(self.worst_running or 0.0, running)
            self.running_over_10ms += running > 0.01
            metrics.LOOP_LAG_RUNNING_SECONDS.observe(running)
        self._schedule(loop, waited)  # this reading starts the next interval: one read of the kernel's count

    def close(self) -> None:
        """Stop sampling, and log what was seen (benchmarks read this line: bench/loop_lag.py)."""
        metrics.LOOP_TASKS.set_function(lambda: 0)  # and let go of the loop
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            running = (
                ""
                if self.worst_running is None
                else f"; less waits for a CPU: {self.running_over_10ms} over 10 ms, worst "
                f"{self.worst_running * 1000:.1f} ms"
            )
            logger.info(
                "event loop lag: %d samples, %d over 10 ms, worst %.1f ms%s",
                self.samples,
                self.over_10ms,
                self.worst * 1000,
                running,
            )
        if self._waits is not None:
            self._waits.close()
            self._waits = None
