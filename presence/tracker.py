"""This replica's own awareness clients, and their entries in the presence registry.

A room hands every awareness message of its local peers to the replication (``publish_awareness``).
``own_entries`` picks the entries that speak for this replica's own clients (a y-websocket client relays
the states of everyone it sees, other replicas' clients included); the :class:`PresenceTracker` keeps
them per room and writes them to the registry (presence.registry): shortly after they change, batched,
and again well within the registry's TTL while they stay. Embedded mode (presence.embedded) and the
cluster (presence.broker_replication) use it alike; in a cluster presence.awareness_relay also reads it
to tell its own clients from other replicas'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from collab_server import metrics
from collab_server.errors import BrokerError
from collab_server.protocol import AwarenessEntry, AwarenessMessage, decode_awareness, decode_frame
from presence.registry import PresenceRegistry, entry_for

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom

logger = logging.getLogger(__name__)


def awareness_entries(message: bytes) -> list[AwarenessEntry]:
    """The entries of an encoded awareness message (as a room hands it to the replication)."""
    entries: list[AwarenessEntry] = []
    for decoded in decode_frame(message):
        if isinstance(decoded, AwarenessMessage):
            entries.extend(decode_awareness(decoded.update))
    return entries


def own_entries(room: SharedRoom, entries: list[AwarenessEntry], tracker: PresenceTracker) -> list[AwarenessEntry]:
    """The entries of an awareness message from a local peer that speak for this replica's own clients.

    y-websocket clients relay every awareness change they see, other clients' included, so a local
    peer's message is not all ours. A live state is ours if the room credited its client to one of our
    peers (``has_local_client``: states a local peer introduced and that were accepted); a removal is
    ours if the client was (the room forgets the credit before it hands the removal over).
    """
    ours = tracker.live_ids(room.name)
    owned: list[AwarenessEntry] = []
    for entry in entries:
        client_id = entry.client_id
        if entry.removed:
            if client_id in ours:
                owned.append(entry)
        # Known clients are checked in O(1); only unknown ones (new, or relayed) ask the room, which
        # walks its peers: the same order of work as the room's own broadcast of the message.
        elif client_id in ours or room.has_local_client(client_id):
            owned.append(entry)
    return owned


class PresenceTracker:
    """Writes this replica's own awareness clients to the registry: shortly after they change (batched,
    so a cursor moving 30 times a second costs one write per ``flush_delay``), and again every
    ``registry.ttl / 3`` while they stay, so that their entries outlive the registry's TTL."""

    def __init__(self, registry: PresenceRegistry, replica_id: str, *, flush_delay: float = 0.2) -> None:
        self.registry = registry
        self.replica_id = replica_id
        self.flush_delay = flush_delay
        self.refresh_interval = max(1.0, registry.ttl / 3)
        self._live: dict[str, dict[int, AwarenessEntry]] = {}
        self._changed: dict[str, set[int]] = {}
        self._wakeup = asyncio.Event()
        self._failing = False

    def __repr__(self) -> str:
        return f"PresenceTracker(rooms={len(self._live)}, pending={len(self._changed)})"

    def observe(self, room: str, entries: Iterable[AwarenessEntry]) -> None:
        live = self._live.setdefault(room, {})
        changed = self._changed.setdefault(room, set())
        for entry in entries:
            if entry.removed:
                live.pop(entry.client_id, None)
            else:
                live[entry.client_id] = entry
            changed.add(entry.client_id)
        if not live:
            del self._live[room]
        self._wakeup.set()

    def observe_message(self, room: SharedRoom, message: bytes) -> tuple[list[AwarenessEntry], list[AwarenessEntry]]:
        """Track what a local peer's awareness message says about our own clients; returns (its entries,
        the entries that are ours)."""
        entries = awareness_entries(message)
        owned = own_entries(room, entries, self)
        if owned:
            self.observe(room.name, owned)
        return entries, owned

    def live_ids(self, room: str) -> Collection[int]:
        """The client ids our own peers have in ``room`` (a live view)."""
        return self._live.get(room, {}).keys()

    def rewrite_all(self) -> None:
        """Write every live entry again soon (the registry lost them: Redis restarted empty)."""
        for room, live in self._live.items():
            self._changed.setdefault(room, set()).update(live)
        self._wakeup.set()

    def forget_room(self, room: str) -> None:
        """The room unloaded: whatever is still listed for it here is gone."""
        live = self._live.pop(room, None)
        if live:
            self._changed.setdefault(room, set()).update(live)
            self._wakeup.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self.refresh_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, next_refresh - loop.time()))
            if loop.time() >= next_refresh:
                next_refresh = loop.time() + self.refresh_interval
                for room, live in self._live.items():
                    self._changed.setdefault(room, set()).update(live)
            else:
                await asyncio.sleep(self.flush_delay)  # let the changes of the next moments join this write
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        changed, self._changed = self._changed, {}
        now = time.time()
        for room, client_ids in changed.items():
            live = self._live.get(room, {})
            upserts = [entry_for(live[cid], self.replica_id, now) for cid in client_ids if cid in live]
            removals = [cid for cid in client_ids if cid not in live]
            try:
                await self.registry.write(room, upserts, removals)
                self._failing = False
            except BrokerError as exc:
                metrics.BROKER_ERRORS.labels("presence").inc()
                if not self._failing:
                    logger.warning("presence registry write failed (%s); retried on the next refresh", exc)
                    self._failing = True

    async def close(self) -> None:
        """Shutting down: this replica's clients leave the registry."""
        for room in list(self._live):
            self.forget_room(room)
        await self.flush()
