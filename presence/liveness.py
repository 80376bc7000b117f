"""Liveness: each replica's heartbeat, and what the others do when one stops.

A replica writes its heartbeat to the presence registry once per ``interval``; each heartbeat keeps it
alive for ``heartbeat_ttl`` (two intervals, so one late or lost heartbeat is not taken for a death).
The same loop checks, twice per interval, the replicas this one shares rooms with: one whose heartbeat
expired, and that was not heard on the broker for a TTL either, is dead. The arithmetic of the promise,
for a replica killed at time K (its last heartbeat and its last envelope are from K or before)::

    K + heartbeat_ttl       its heartbeat has expired, and it has been silent for a TTL   (2 intervals)
      + check_every         the next check finds it                                     (interval / 2)
      = detection_bound     2.5 intervals: 2.5 s with the default COLLAB_HEARTBEAT_INTERVAL of 1 s

which leaves half an interval for the removals to reach the clients within the documented three
intervals (the README, ``COLLAB_HEARTBEAT_INTERVAL``'s help, and tests/e2e/test_replicas.py hold to it).

Upon finding it dead, a survivor removes its clients' awareness states from its rooms (so that their
cursors disappear for every local peer, presence.awareness_relay), prunes its entries from the registry,
and, for each room it sent updates to, appends the room's whole state through the writer: the dead
replica may have applied and published edits it never committed, and we have them (duplicates are
harmless to a CRDT; compaction folds them).

Checks begin only once our own heartbeats have been going for a full TTL: after a Redis restart every
key is gone, the living replicas' included, and they need one interval to write theirs again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from collab_server import metrics
from collab_server.errors import BrokerError, CollabError
from collab_server.protocol import EMPTY_STATE_VECTOR

if TYPE_CHECKING:
    from persistence.base import UpdateWriter
    from presence.awareness_relay import AwarenessRelay
    from presence.link import RoomLink
    from presence.registry import PresenceRegistry

logger = logging.getLogger(__name__)

TTL_INTERVALS: Final = 2
CHECKS_PER_INTERVAL: Final = 2


def heartbeat_ttl(interval: float) -> float:
    """How long one heartbeat keeps its replica alive."""
    return TTL_INTERVALS * interval


def check_every(interval: float) -> float:
    """How often a replica checks the others' heartbeats."""
    return interval / CHECKS_PER_INTERVAL


def detection_bound(interval: float) -> float:
    """The longest time from a replica's death to the others dropping its clients (module docstring)."""
    return heartbeat_ttl(interval) + check_every(interval)


class Heartbeat:
    """This replica's heartbeat loop: beat every ``interval``, and run ``check`` (if any) twice as often.

    ``on_reset`` is called when the registry had lost our heartbeat (Redis restarted empty, or we were
    cut off for a TTL): whatever we wrote there is likely gone too. ``connected`` says whether the broker
    is live: while it is not, others cannot be heard, so nobody is judged.
    """

    def __init__(
        self,
        registry: PresenceRegistry,
        replica_id: str,
        interval: float,
        *,
        on_reset: Callable[[], None],
        connected: Callable[[], bool] = lambda: True,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry
        self.replica_id = replica_id
        self.interval = interval
        self.ttl = heartbeat_ttl(interval)
        self._on_reset = on_reset
        self._connected = connected
        self._check = check

    def __repr__(self) -> str:
        return f"Heartbeat({self.replica_id!r}, every {self.interval}s, ttl {self.ttl}s)"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        healthy_since: float | None = None
        step = check_every(self.interval)
        tick = loop.time()
        for count in itertools.count():
            if count % CHECKS_PER_INTERVAL == 0:
                try:
                    if not await self.registry.heartbeat(self.replica_id, self.ttl):
                        healthy_since = None
                        self._on_reset()
                    if not self._connected():
                        healthy_since = None
                    elif healthy_since is None:
                        healthy_since = loop.time()
                except BrokerError as exc:
                    metrics.BROKER_ERRORS.labels("heartbeat").inc()
                    if healthy_since is not None:
                        logger.warning("replica heartbeat failed: %s", exc)
                    healthy_since = None
            if self._check is not None and healthy_since is not None and loop.time() - healthy_since >= self.ttl:
                try:
                    await self._check()
                except BrokerError as exc:
                    metrics.BROKER_ERRORS.labels("heartbeat").inc()
                    logger.debug("dead-replica check failed: %s", exc)
            # On a fixed cadence, not ``step`` after the work: the bound above counts on it.
            tick = max(tick + step, loop.time())
            await asyncio.sleep(tick - loop.time())


class DeadReplicas:
    """Finds the replicas this one shares rooms with that stopped heartbeating, and cleans up after them
    (see the module docstring). ``check`` is the Heartbeat's check."""

    def __init__(
        self,
        registry: PresenceRegistry,
        replica_id: str,
        links: dict[str, RoomLink],
        relay: AwarenessRelay,
        *,
        ttl: float,
        writer: UpdateWriter | None,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.registry = registry
        self.replica_id = replica_id
        self.links = links
        self.relay = relay
        self.ttl = ttl
        self.writer = writer
        self._spawn = spawn
        self._heard: dict[str, float] = {}  # replica → when we last heard anything from it (loop time)

    def __repr__(self) -> str:
        return f"DeadReplicas({self.replica_id!r}, known={len(self._heard)})"

    def heard(self, replica: str) -> None:
        """An envelope from ``replica`` arrived: it is alive, whatever the registry says."""
        self._heard[replica] = asyncio.get_running_loop().time()

    async def check(self) -> None:
        candidates: set[str] = set()
        for link in self.links.values():
            candidates.update(link.replicas)
            candidates.update(link.remote_clients.values())
        candidates.discard(self.replica_id)
        candidates.discard("")
        if not candidates:
            return
        alive = await self.registry.alive(candidates)
        now = asyncio.get_running_loop().time()
        dead = {r for r in candidates - alive if now - self._heard.get(r, float("-inf")) > self.ttl}
        if dead:
            self._bury(dead)

    def _bury(self, dead: set[str]) -> None:
        for replica in dead:
            metrics.REPLICAS_DEAD.inc()
            self._heard.pop(replica, None)
            logger.warning(
                "replica %s stopped heartbeating; dropping its presence", replica, extra={"replica": replica}
            )
        for link in list(self.links.values()):
            gone = [client_id for client_id, owner in link.remote_clients.items() if owner in dead]
            held = dead & link.replicas
            link.replicas -= dead
            self.relay.drop(link, gone)
            if gone or held:
                self._spawn(self._prune(link.name, dead))
            if dead & link.editors:
                link.editors -= dead
                self._spawn(self._store_what_only_it_had(link))

    async def _prune(self, room: str, dead: set[str]) -> None:
        try:
            await self.registry.prune(room, dead)
        except BrokerError as exc:
            metrics.BROKER_ERRORS.labels("presence").inc()
            logger.debug("pruning presence of room %r failed: %s", room, exc)

    async def _store_what_only_it_had(self, link: RoomLink) -> None:
        """Append the room's whole state: it holds every edit the dead replica published to us."""
        room, writer = link.room, self.writer
        if room is None or writer is None:
            return
        try:
            update = await room.diff(EMPTY_STATE_VECTOR)
        except CollabError as exc:
            metrics.BROKER_ERRORS.labels("reconcile").inc()
            logger.warning("room %r: reading its state for the store failed: %s", link.name, exc)
            return
        # Appended even if the room unloaded meanwhile: its unload stored nothing that came from a replica.
        writer.append(link.name, update)
        logger.info("room %r: stored its state again, for edits only a dead replica had", link.name)
