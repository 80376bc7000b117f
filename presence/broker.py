"""The Broker seam: fan-out of envelopes between the replicas that hold a room.

A broker carries *envelopes* on one channel per room. An envelope says which replica sent it, what kind
of message it is, optionally which replica it is meant for, and carries the payload bytes::

    Envelope(replica="pod-a-17-3f9c1e", kind=Kind.UPDATE, payload=b"...", target="")

Delivery is best effort, like Redis pub/sub: a broker may drop envelopes (a broken connection, a Redis
restart, a subscriber too far behind). It never does so silently: it puts a :class:`Gap` into the
subscription at the point where envelopes may be missing, and the replication repairs the difference by
exchanging state vectors. Everything above the broker is built on that one promise.

Every broker belongs to one replica. A subscription yields the envelopes *other* replicas published on
its room's channel whose target is empty or this replica; a replica never hears its own envelopes back.

    Broker.publish([(room, envelope), ...])           one round trip for a batch
    async with broker.subscribe(room) as subscription:
        batch = await subscription.next_batch()        list of Envelope | Gap

Subscribing returns once the channel is live, so anything published afterwards is delivered (or a Gap
is). When the backend cannot confirm that (Redis is down), ``subscribe`` still returns — a replica keeps
serving its own peers — and a Gap follows as soon as the channel is live again.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Protocol

from collab_server import metrics


class Kind(enum.IntEnum):
    """What an envelope carries. The values are the wire encoding: never renumber them."""

    UPDATE = 1
    """A Yjs update a local peer made."""
    AWARENESS = 2
    """An awareness message (the whole y-websocket message, relayed to peers as received)."""
    SYNC_STEP1 = 3
    """State vector and delete-set digest: "send me what I lack" (see presence.sync)."""
    SYNC_STEP2 = 4
    """The answer to a step1: a Yjs update with what the asker lacks."""
    DIGEST = 5
    """A short hash of the room's state vector and delete set, for periodic anti-entropy."""
    AWARENESS_QUERY = 6
    """"Tell me who your peers are": answered with AWARENESS_FULL."""
    AWARENESS_FULL = 7
    """Every awareness state a replica's own peers have (an awareness message, maybe empty): the
    receiver also drops the states it attributes to that replica that are no longer in it."""
    LEAVE = 8
    """The sender unloaded the room (empty payload): stop publishing to it on its account."""


_KIND_LABELS: Final = {kind: kind.name.lower() for kind in Kind}


def kind_label(kind: Kind) -> str:
    return _KIND_LABELS[kind]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message between replicas. ``target`` empty: for every replica holding the room."""

    replica: str
    kind: Kind
    payload: bytes
    target: str = ""

    def __repr__(self) -> str:
        # Never the payload: it is document content.
        to = f", target={self.target!r}" if self.target else ""
        return f"Envelope({self.kind.name}, from={self.replica!r}{to}, {len(self.payload)} bytes)"


@dataclass(frozen=True, slots=True)
class Gap:
    """Envelopes may have been lost here (``reason`` says why): the consumer must resynchronise."""

    reason: str


Delivery = Envelope | Gap


class Subscription:
    """The envelopes of one room waiting for its consumer: a bounded queue that never blocks the broker.

    A consumer that falls behind by more than ``max_messages`` or ``max_bytes`` loses what is queued
    and gets one Gap instead: its room resynchronises, and the broker's reader (shared by every room)
    never waits for it.
    """

    __slots__ = ("_bytes", "_closed", "_queue", "_waiter", "max_bytes", "max_messages", "room")

    def __init__(self, room: str, *, max_messages: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.room = room
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queue: deque[Delivery] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Subscription({self.room!r}, queued={len(self._queue)}, closed={self._closed})"

    def __len__(self) -> int:
        return len(self._queue)

    def deliver(self, envelope: Envelope) -> None:
        """Queue one envelope (broker side); on overflow drop the queue and leave a Gap."""
        if self._closed:
            return
        size = len(envelope.payload)
        if self._queue and (len(self._queue) >= self.max_messages or self._bytes + size > self.max_bytes):
            metrics.BROKER_DROPPED.labels("subscriber_overflow").inc(len(self._queue) + 1)
            self._queue.clear()
            self._bytes = 0
            self._queue.append(Gap("subscriber overflow"))
            self._wake()
            return
        self._queue.append(envelope)
        self._bytes += size
        self._wake()

    def gap(self, reason: str) -> None:
        """Envelopes may be missing from here on (broker side)."""
        if self._closed:
            return
        # One pending Gap is enough: consecutive gaps would only repeat the same resync.
        if not (self._queue and isinstance(self._queue[-1], Gap)):
            self._queue.append(Gap(reason))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_batch(self) -> list[Delivery]:
        """Everything queued, in order; waits while nothing is. Raises EOFError once closed."""
        while not self._queue:
            if self._closed:
                raise EOFError(f"subscription to {self.room!r} is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        return batch

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._bytes = 0
        self._wake()


class Broker(Protocol):
    """Fan-out of envelopes between replicas, one channel per room (see the module docstring)."""

    replica_id: str

    async def start(self) -> None:
        """Begin connecting in the background; returns at once (the backend may be down)."""
        ...

    async def publish(self, batch: Sequence[tuple[str, Envelope]]) -> None:
        """Publish ``(room, envelope)`` pairs, in order, in as few round trips as the backend allows.
        BrokerError if the backend failed: some or none of them were delivered."""
        ...

    def subscribe(self, room: str) -> AbstractAsyncContextManager[Subscription]:
        """Listen to ``room``'s channel for the life of the context (see the module docstring)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the subscriber side is live right now (for /readyz-style reporting and tests)."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where the fan-out goes, for the startup log (no credentials)."""
        ...
