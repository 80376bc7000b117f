"""Publishing: every envelope this replica sends goes through the :class:`Outbox`.

``Outbox.publish(room, kind, payload)`` queues and returns at once (a room's hot path never waits for
Redis); one task per lane drains the queue in batches into ``Broker.publish`` (presence.broker), which
is one round trip per batch. Two lanes: payloads past ``BULK_THRESHOLD`` take the bulk lane, so that a
huge update never holds up the small envelopes of other rooms.

Publishing may fail (Redis is down) or the outbox may overflow; either way the envelopes are dropped and
their rooms remembered. Once a publish succeeds again, ``on_recovered`` is called with those rooms, and
presence.broker_replication has them ask the other replicas to compare (presence.repair): only the
difference travels, however much was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from collab_server import metrics
from collab_server.errors import BrokerError
from presence.broker import Broker, Envelope, Kind, kind_label

logger = logging.getLogger(__name__)

# Payloads past this go through the bulk lane, so a huge update never delays other rooms' small ones.
BULK_THRESHOLD: Final = 256 * 1024
_BATCH_MESSAGES: Final = 512
_BATCH_BYTES: Final = 1024 * 1024
_MAX_BYTES: Final = 128 * 1024 * 1024
_BACKOFF_MAX: Final = 2.0

_PUBLISHED = {kind: metrics.BROKER_PUBLISHED.labels(kind_label(kind)) for kind in Kind}


@dataclass(eq=False)
class _Lane:
    """One publishing queue, drained in batches by its own task."""

    name: str
    queue: deque[tuple[str, Envelope]] = field(default_factory=deque)
    size: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Outbox:
    """Envelopes of this replica waiting to be published (see the module docstring)."""

    def __init__(
        self, broker: Broker, *, on_recovered: Callable[[set[str]], None], max_bytes: int = _MAX_BYTES
    ) -> None:
        self.broker = broker
        self.replica_id = broker.replica_id
        self.max_bytes = max_bytes
        self._on_recovered = on_recovered
        self._small = _Lane("small")
        self._bulk = _Lane("bulk")
        self.dirty: set[str] = set()  # rooms whose envelopes were lost: repaired once publishing works
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"Outbox(queued={len(self)}, dirty={len(self.dirty)})"

    def __len__(self) -> int:
        return len(self._small.queue) + len(self._bulk.queue)

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._pump(lane), name=f"outbox-{lane.name}") for lane in (self._small, self._bulk)
            ]

    def publish(self, room: str, kind: Kind, payload: bytes, target: str = "") -> None:
        """Queue an envelope; never blocks. A full lane drops its oldest envelopes (their rooms are
        repaired once publishing works again)."""
        envelope = Envelope(self.replica_id, kind, payload, target)
        lane = self._bulk if len(payload) > BULK_THRESHOLD else self._small
        lane.queue.append((room, envelope))
        lane.size += len(payload)
        while lane.size > self.max_bytes and len(lane.queue) > 1:
            lost_room, lost = lane.queue.popleft()
            lane.size -= len(lost.payload)
            self.dirty.add(lost_room)
            metrics.BROKER_DROPPED.labels("outbox_full").inc()
        lane.idle.clear()
        lane.wakeup.set()

    async def drained(self) -> None:
        """Until both lanes are empty and nothing is in flight."""
        if not self._tasks:
            return
        for lane in (self._small, self._bulk):
            await lane.idle.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pump(self, lane: _Lane) -> None:
        failures = 0
        queue = lane.queue
        while True:
            if not queue:
                lane.idle.set()
                metrics.BROKER_OUTBOX.set(len(self))
                await lane.wakeup.wait()
                lane.wakeup.clear()
                continue
            batch: list[tuple[str, Envelope]] = []
            size = 0
            while queue and len(batch) < _BATCH_MESSAGES and (not batch or size < _BATCH_BYTES):
                room, envelope = queue.popleft()
                batch.append((room, envelope))
                size += len(envelope.payload)
            lane.size -= size
            metrics.BROKER_OUTBOX.set(len(self))
            try:
                await self.broker.publish(batch)
            except BrokerError as exc:
                failures += 1
                metrics.BROKER_ERRORS.labels("publish").inc()
                metrics.BROKER_DROPPED.labels("publish_failed").inc(len(batch))
                self.dirty.update(room for room, _ in batch)
                if failures == 1:
                    logger.warning("broker: publishing failed (%s); rooms are repaired once it works", exc)
                await asyncio.sleep(min(0.05 * 2**failures, _BACKOFF_MAX))
                continue
            for _, envelope in batch:
                _PUBLISHED[envelope.kind].inc()
            if failures:
                logger.info("broker: publishing works again after %d failed attempts", failures)
                failures = 0
            if self.dirty:
                dirty, self.dirty = self.dirty, set()
                self._on_recovered(dirty)
