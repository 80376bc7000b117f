"""In-process backends: a broker and a presence registry shared by the apps of one process.

A :class:`LocalHub` plays the part Redis plays in a cluster: every :class:`LocalBroker` and
:class:`LocalRegistry` built on the same hub sees the same channels, presence and heartbeats. Embedded
mode uses a LocalRegistry on a private hub; the contract and unit tests run several replicas on one.

``LocalBroker.disconnect()`` / ``reconnect()`` behave like a lost and re-established Redis connection
(publishes fail, deliveries are lost, a Gap follows the reconnect): a small, real implementation that
lets tests exercise the repair paths without a Redis server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager

from collab_server.errors import BrokerError
from presence.broker import Envelope, Subscription
from presence.registry import PresenceEntry


class LocalHub:
    """The shared state of in-process brokers and registries (one per simulated cluster)."""

    def __init__(self) -> None:
        self.channels: dict[str, set[tuple[LocalBroker, Subscription]]] = {}
        self.presence: dict[str, dict[int, PresenceEntry]] = {}
        self.heartbeats: dict[str, float] = {}  # replica → monotonic expiry

    def __repr__(self) -> str:
        return f"LocalHub(channels={len(self.channels)}, rooms_with_presence={len(self.presence)})"


class LocalBroker:
    """In-process fan-out: ``publish`` hands envelopes straight to the other replicas' queues."""

    def __init__(
        self,
        hub: LocalHub,
        replica_id: str,
        *,
        max_queue_messages: int = 10_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.hub = hub
        self.replica_id = replica_id
        self._max_messages = max_queue_messages
        self._max_bytes = max_queue_bytes
        self._subscriptions: set[Subscription] = set()
        self._connected = True
        self._closed = False

    def __repr__(self) -> str:
        return f"LocalBroker({self.replica_id!r}, subscriptions={len(self._subscriptions)})"

    async def start(self) -> None:
        pass

    @property
    def connected(self) -> bool:
        return self._connected and not self._closed

    async def publish(self, batch: Sequence[tuple[str, Envelope]]) -> None:
        if not self.connected:
            raise BrokerError("local broker is disconnected")
        channels = self.hub.channels
        for room, envelope in batch:
            for broker, subscription in channels.get(room, ()):
                if broker is self or not broker.connected:
                    continue
                if envelope.target and envelope.target != broker.replica_id:
                    continue
                subscription.deliver(envelope)

    @asynccontextmanager
    async def subscribe(self, room: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(room, max_messages=self._max_messages, max_bytes=self._max_bytes)
        member = (self, subscription)
        self.hub.channels.setdefault(room, set()).add(member)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            self._subscriptions.discard(subscription)
            members = self.hub.channels.get(room)
            if members is not None:
                members.discard(member)
                if not members:
                    del self.hub.channels[room]

    def disconnect(self) -> None:
        """Act as if the connection to the hub broke: publishes fail, deliveries are lost."""
        self._connected = False

    def reconnect(self) -> None:
        """The connection is back: every subscription gets a Gap (as after a Redis resubscribe)."""
        self._connected = True
        for subscription in self._subscriptions:
            subscription.gap("resubscribed")

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()

    def describe(self) -> str:
        return "in-process broker"


class LocalRegistry:
    """In-process presence registry (embedded mode, tests). Times: ``clock`` for heartbeats (monotonic),
    ``time.time`` for ``last_seen``, as in Redis."""

    def __init__(self, hub: LocalHub | None = None, *, ttl: float = 60.0) -> None:
        self.hub = hub or LocalHub()
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"LocalRegistry(ttl={self.ttl})"

    async def write(self, room: str, upserts: Sequence[PresenceEntry], removals: Collection[int]) -> None:
        entries = self.hub.presence.setdefault(room, {})
        for client_id in removals:
            entries.pop(client_id, None)
        for entry in upserts:
            entries[entry.client_id] = entry
        if not entries:
            del self.hub.presence[room]

    async def list(self, room: str) -> list[PresenceEntry]:
        entries = list(self.hub.presence.get(room, {}).values())
        alive = await self.alive({entry.replica for entry in entries})
        fresh_after = time.time() - self.ttl
        return sorted(
            (e for e in entries if e.replica in alive and e.last_seen >= fresh_after), key=lambda e: e.client_id
        )

    async def prune(self, room: str, replicas: Collection[str]) -> int:
        entries = self.hub.presence.get(room, {})
        doomed = [client_id for client_id, entry in entries.items() if entry.replica in replicas]
        await self.write(room, (), doomed)
        return len(doomed)

    async def heartbeat(self, replica: str, ttl: float) -> bool:
        now = time.monotonic()
        was_alive = self.hub.heartbeats.get(replica, 0.0) > now
        self.hub.heartbeats[replica] = now + ttl
        return was_alive

    async def alive(self, replicas: Collection[str]) -> set[str]:
        now = time.monotonic()
        return {replica for replica in replicas if self.hub.heartbeats.get(replica, 0.0) > now}

    async def leave(self, replica: str) -> None:
        self.hub.heartbeats.pop(replica, None)

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return "in-process presence"
