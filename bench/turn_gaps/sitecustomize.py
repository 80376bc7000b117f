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

With ``COLLAB_TURN_GAPS_STACKS`` set to a file, a thread also samples the loop thread's Python stack every
millisecond and, for each long gap, writes the samples taken inside it there (``# gap`` line, then one
collapsed stack per sample). The sampler needs the GIL: inside a long turn it gets a sample each time the
interpreter's switch interval makes the loop's thread let go (5 ms), which is enough to say what ran.

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
_STACKS = os.environ.get("COLLAB_TURN_GAPS_STACKS")


class _Sampler:
    """Keeps the last second of the loop thread's stacks, sampled every millisecond from a thread."""

    def __init__(self, thread_id: int, out: Any) -> None:
        import collections
        import threading

        self._thread_id, self._out = thread_id, out
        self._samples: Any = collections.deque(maxlen=1000)
        threading.Thread(target=self._run, name="turn-gaps-sampler", daemon=True).start()

    def _run(self) -> None:
        while True:
            frame = sys._current_frames().get(self._thread_id)
            stack = []
            while frame is not None:
                code = frame.f_code
                stack.append(f"{code.co_qualname} ({code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
                frame = frame.f_back
            self._samples.append((time.monotonic(), ";".join(reversed(stack))))
            time.sleep(_TICK)

    def write(self, began: float, ended: float, gap_ms: float) -> None:
        self._out.write(f"# gap {gap_ms:.1f} ms ending {time.time():.3f} (monotonic {ended:.4f})\n")
        for at, stack in list(self._samples):
            if began <= at <= ended:
                self._out.write(stack + "\n")


class _Ticker:
    def __init__(self, loop: Any, out: Any, waits: Any, sampler: _Sampler | None) -> None:
        self._loop, self._out, self._waits, self._sampler = loop, out, waits, sampler
        self._last = loop.time()
        self._waited = waits.seconds() or 0.0

    def tick(self) -> None:
        now = self._loop.time()
        waited = self._waits.seconds() or 0.0
        gap = now - self._last
        if gap > _THRESHOLD:
            self._out.write(f"{time.time():.3f} {gap * 1000:.1f} {(waited - self._waited) * 1000:.1f}\n")
            if self._sampler is not None:
                # loop.time() is time.monotonic() for asyncio's and uvloop's loops alike.
                self._sampler.write(self._last, now, gap * 1000)
        self._last, self._waited = now, waited
        self._loop.call_later(_TICK, self.tick)


def _patch(module: Any) -> None:
    start = module.LoopLagMonitor.start

    def start_with_ticker(self: Any) -> Any:
        import asyncio

        result = start(self)
        import threading

        out = open(_LOG, "a", buffering=1)  # held for the server's life
        sampler = _Sampler(threading.get_ident(), open(_STACKS, "a", buffering=1)) if _STACKS else None
        _Ticker(asyncio.get_running_loop(), out, module.RunQueueWait(), sampler).tick()
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
