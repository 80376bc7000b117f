"""Every long event-loop turn of a collab-server, logged with its time: a benchmark tool, not product code.

``collab_loop_lag_seconds`` samples the loop every 50 ms, so it sees only some of the long turns. With this
directory first on ``PYTHONPATH`` and ``COLLAB_TURN_GAPS_LOG`` set, a server also runs a timer every
millisecond on its loop and writes each gap between two of its runs longer than ``COLLAB_TURN_GAPS_MS``
(default 8) to that file, one line each: the wall-clock time it ended, the gap, and how long of it the
loop's thread waited for a CPU (``/proc/thread-self/schedstat``; a gap made of waits is other processes'
turns, such as the CRDT workers' where they share the loop's core, not the loop's own work).

    PYTHONPATH=bench/turn_gaps COLLAB_TURN_GAPS_LOG=/tmp/gaps.log collab-server --database-url memory://
    .venv/bin/python bench/turn_gaps/report.py /tmp/gaps.log

What a long turn was: ``kernel_stacks.py`` here samples where the server's threads sleep in the kernel,
``cpu_takers.py`` reads ``perf``'s record of the scheduler to say who had the CPU while the loop waited.

Python imports ``sitecustomize`` at start-up; this one wraps ``LoopLagMonitor.start`` (which the app calls
once its loop runs) when ``collab_server.looplag`` is first imported, and does nothing else.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time
from typing import Any

_LOG = os.environ.get("COLLAB_TURN_GAPS_LOG")
_THRESHOLD = float(os.environ.get("COLLAB_TURN_GAPS_MS", "8")) / 1000
_TICK = 0.001


class _Ticker:
    def __init__(self, loop: Any, out: Any, waits: Any) -> None:
        self._loop, self._out, self._waits = loop, out, waits
        self._last = loop.time()
        self._waited = waits.seconds() or 0.0

    def tick(self) -> None:
        now = self._loop.time()
        waited = self._waits.seconds() or 0.0
        gap = now - self._last
        if gap > _THRESHOLD:
            self._out.write(f"{time.time():.3f} {gap * 1000:.1f} {(waited - self._waited) * 1000:.1f}\n")
        self._last, self._waited = now, waited
        self._loop.call_later(_TICK, self.tick)


def _patch(module: Any) -> None:
    start = module.LoopLagMonitor.start

    def start_with_ticker(self: Any) -> Any:
        import asyncio

        result = start(self)
        out = open(_LOG, "a", buffering=1)  # held for the server's life
        _Ticker(asyncio.get_running_loop(), out, module.RunQueueWait()).tick()
        return result

    module.LoopLagMonitor.start = start_with_ticker


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "collab_server.looplag":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch
        return spec


if _LOG:
    sys.meta_path.insert(0, _Hook())
