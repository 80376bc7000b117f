"""The event loop's lag, sampled: every ``interval`` a timer asks to run, and how late it ran is how
long other work held the loop (one long turn, or many short ones back to back). Every socket, room and
the store's commit replies wait that long, so this is the first number to look at when latency grows.
Exported as ``collab_loop_lag_seconds``; the cost is one timer callback per interval.

Beside it, ``collab_loop_tasks``: the tasks alive on the loop, counted when scraped. An idle websocket
connection holds none (``collab_server.session``), so it follows work in flight, and a number that grows
with the connections means tasks are held (or leaked) per connection.
"""

from __future__ import annotations

import asyncio
import logging

from collab_server import metrics

logger = logging.getLogger(__name__)


class LoopLagMonitor:
    """Samples the running loop's lag until ``close``."""

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self.worst = 0.0  # the largest lag seen, for tests and benchmarks
        self.samples = 0
        self.over_10ms = 0

    def start(self) -> LoopLagMonitor:
        loop = asyncio.get_running_loop()
        self._schedule(loop)
        metrics.LOOP_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        return self

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + self._interval
        self._handle = loop.call_at(due, self._sample, loop, due)

    def _sample(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        lag = max(loop.time() - due, 0.0)
        self.worst = max(self.worst, lag)
        self.samples += 1
        self.over_10ms += lag > 0.01
        metrics.LOOP_LAG_SECONDS.observe(lag)
        self._schedule(loop)

    def close(self) -> None:
        """Stop sampling, and log what was seen (benchmarks read this line: bench/loop_lag.py)."""
        metrics.LOOP_TASKS.set_function(lambda: 0)  # and let go of the loop
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            logger.info(
                "event loop lag: %d samples, %d over 10 ms, worst %.1f ms",
                self.samples,
                self.over_10ms,
                self.worst * 1000,
            )
