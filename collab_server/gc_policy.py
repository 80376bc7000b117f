"""Keep CPython's cyclic garbage collector off the long-lived heap: ``GcPolicy``.

Two levers: collection thresholds that make full collections rare (on by default), and periodic
collect-and-freeze (off by default).

Why. The collector walks every tracked object of the generations it collects, on the event loop's
thread. A replica held about 70 tracked objects per open connection (protocol, parser, scope, peer,
rate buckets, the ASGI task's coroutines; 44 since idle connections hold no task), so 4,000 connections
were ~330,000 objects, and CPython
collects the oldest generation whenever it has grown by a quarter, as it does in every connection storm.
Measured on 1,000 rooms x 4 clients connecting and editing (docs/benchmarks.md, "Garbage collection"):
9 full collections of up to 0.6 s of CPU each, a third of the process's CPU time, every one a stall of
the whole replica.

Collect-and-freeze. Every ``interval`` seconds: collect (``gc.collect()``; frozen objects are not walked, so this costs
only what was allocated since the last time), then freeze what survived (``gc.freeze()``): the collector
never walks it again. Between two ticks CPython's own young collections run as usual.

The one rule this needs. A frozen object that dies is still freed by its reference count; only a
*reference cycle* among frozen objects is never freed. So what lives long must not die in a cycle: a
closed connection's objects are freed by reference counts alone (``transport`` and ``handshake`` break
the cycles uvicorn, websockets and the ASGI extension left; tests/e2e/test_gc_policy.py holds every kind
of connection to it), and ``collab_gc_frozen_objects`` shows a leak, should one appear, as a number that
grows while the connection count does not.

Off by default (``COLLAB_GC_FREEZE_INTERVAL=0``). In an hour-long fuzz run (issue 8) the frozen objects
grew from 57,000 to 620,000 in 12 minutes with 127 connections open. The websockets parser cycle above
(a connection held past a tick, then closed, left a frozen cycle that is never freed) is the likely
cause, fixed since, but no fuzz run has confirmed it: until one does, freezing is for a measured
deployment that watches that gauge.

The thresholds (``COLLAB_GC_THRESHOLDS``, default 1000,4,500 against CPython's 700,10,10). CPython runs a
full collection whenever the objects promoted to the oldest generation since the last one reach a quarter
of it, and no sooner than every ``threshold2`` collections of the middle one. With 1,000 rooms x 4 clients
editing, CPython's thresholds gave 12 full collections of up to 455 ms each, 3 of the networking
process's 17 CPU seconds; 2000,10,100 gave none, and the process used about a fifth less CPU
(docs/benchmarks.md). They were off by default until session 9, because under the soak's mixed load the
server's RSS then grew by 1.2-1.5 MiB a minute: every closed websocket left its websockets
``ServerProtocol`` in a reference cycle with its parser generator, freed only by a full collection,
which these thresholds make rare. ``transport`` now closes that generator when the connection is lost,
and the soak stays flat with them. ``default`` restores CPython's.

The young collections have a cost of their own: a middle collection walks everything that survived
the young ones since the last, up to ``threshold0 x threshold1`` objects, and in a connect storm nearly
everything survives (each connection's objects). With 2000,10 that was up to 20,000 objects, middle
collections of 15-25 ms in a 10,000-socket storm and up to 51 ms with 1,000 rooms x 4 on a slow machine:
stalls of every room. 1000,4 bounds a middle collection to about 4,000 objects (under 5 ms in the same
storm, 14 ms at worst in the rooms run), and ``threshold2`` 500 keeps the full ones as rare as before:
both settings run one only after 2,000,000 net allocations at the least (500 x 4 x 1000 against
100 x 10 x 2000), and only once the oldest generation grew by a quarter.

What start-up built, frozen once (``freeze_startup``, always). Once the app is up and before it serves,
the server collects its young generations, then freezes what survived: modules, classes, the app and
its settings, 51,000 objects that live as long as the process. Every later full collection walked them
all, which was the first full collection of a connect storm: 14-16 ms, a stall of every room. It is
safe by the same rule, and the more so since these objects are never let go while the process runs.

Only the server process does this (``collab_server.server``): an app built in a test process leaves that
process's collector alone.
"""

from __future__ import annotations

import asyncio
import gc
import time

from collab_server import metrics

_COUNT_EVERY = 60
"""Ticks between two readings of the frozen objects' count (``collab_gc_frozen_objects``)."""


class GcPolicy:
    """The collector's ``thresholds`` (None: CPython's), and collect-then-freeze every ``interval`` seconds
    (0: never) on the running loop, until ``stop``."""

    def __init__(self, interval: float, thresholds: tuple[int, int, int] | None = None) -> None:
        self.interval = interval
        self.thresholds = thresholds
        self._handle: asyncio.TimerHandle | None = None
        self._saved_thresholds: tuple[int, int, int] | None = None
        self.ticks = 0

    def start(self) -> GcPolicy:
        if self.thresholds is not None:
            self._saved_thresholds = gc.get_threshold()
            gc.set_threshold(*self.thresholds)
        if self.interval > 0:
            self._schedule(asyncio.get_running_loop())
        return self

    def freeze_startup(self) -> None:
        """The app is up: collect the young generations, then freeze what start-up built (see the module's
        docstring). Not a full collection: that takes 15-20 ms here, and CPython has just run one while the
        app started; young garbage, the only kind start-up leaves behind since, is what this collects."""
        started = time.perf_counter()
        gc.collect(1)
        gc.freeze()
        metrics.GC_TICK_SECONDS.observe(time.perf_counter() - started)
        metrics.GC_FROZEN_OBJECTS.set(gc.get_freeze_count())  # once: a walk of the frozen list (a ms here)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._saved_thresholds is not None:
            gc.set_threshold(*self._saved_thresholds)
            self._saved_thresholds = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_later(self.interval, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        started = time.perf_counter()
        gc.collect()  # what is not frozen yet: garbage among it must not be frozen with the rest
        gc.freeze()
        metrics.GC_TICK_SECONDS.observe(time.perf_counter() - started)
        if self.ticks % _COUNT_EVERY == 0:
            # gc.get_freeze_count() walks the whole frozen list (CPython 3.11): at every tick it was most
            # of a tick's time once 600,000 objects were frozen (fuzz run H, docs/benchmarks.md).
            metrics.GC_FROZEN_OBJECTS.set(gc.get_freeze_count())
        self.ticks += 1
        self._schedule(loop)
