"""Replication over a Broker: the rooms of this replica kept in step with the same rooms elsewhere.

``BrokerReplication`` implements ``collab_server.replication.Replication`` (the hooks RoomManager calls):

- **Fan-out.** What local peers change is published as UPDATE / AWARENESS envelopes; what arrives is
  applied with a ``Replica`` origin, so it is shown to local peers but never stored or published again
  (the origin rule). A replica never hears its own envelopes (the broker filters them, and so do we).
- **Catch-up on load.** The room's channel is subscribed *before* the store is read; once loaded, a
  SYNC_STEP1 (state vector + delete-set digest) and an AWARENESS_QUERY go to every replica holding the
  room. Each answers with a SYNC_STEP2 holding what the newcomer lacks (including what it has not
  stored yet) and its own peers' awareness; if the newcomer has something it lacks (the step1 asks for
  an "echo"), it sends a step1 back and is answered the same way.
- **Self-healing.** A broker reports possible loss with a Gap (after a resubscribe, a subscriber
  overflow, a lost part); a publish that failed marks its room. Either way the room runs the same
  exchange again, and re-announces its own peers' awareness. Periodically, every room that changed (and
  every room on every sixth round) publishes a DIGEST of its state vector and delete set: a replica whose
  digest differs starts the exchange. Only differences travel.
- **Quiet rooms stay local.** A room that no other replica is known to hold publishes nothing per edit:
  a replica that loads it later asks with its step1 and is answered with everything, and the first
  envelope heard from a replica not yet known triggers an exchange in both directions (which carries any
  edit made in between). With room-affinity routing that is most rooms.
- **Presence.** Own peers' awareness clients go to the presence registry (batched); a heartbeat key per
  replica lets the others drop a dead replica's clients within about four heartbeat intervals, prune
  its registry entries, and append to the store what only the dead replica had applied and published
  but maybe not yet committed.

One room's trouble stays in that room: each room has its own bounded queue and consumer task, a failing
envelope is counted and skipped, and payloads past 256 KiB go through a second publishing lane so they
never hold up the small envelopes of other rooms.

``PresenceOnly`` is the embedded-mode (``memory://``) implementation: no other replicas, so no fan-out
at all and no cost per edit, only the in-process presence registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Collection, Coroutine, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pycrdt import Doc

from collab_server import metrics
from collab_server.errors import BrokerError, CollabError, StoreError
from collab_server.origins import Replica
from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    decode_awareness,
    decode_frame,
    decode_state_vector,
    encode_awareness,
    encode_awareness_message,
)
from collab_server.replication import SingleReplica
from persistence.merge import build_doc
from presence.broker import Broker, Delivery, Envelope, Gap, Kind, Subscription, kind_label
from presence.registry import PresenceRegistry, entry_for
from presence.sync import Step1, delete_set_digest, digest_of_delete_set, has_structs, lacks, room_digest

if TYPE_CHECKING:
    from collab_server.room import Room
    from persistence.base import DocumentStore

logger = logging.getLogger(__name__)

# Payloads past this go through the bulk lane, so a huge update never delays other rooms' small ones.
BULK_THRESHOLD: Final = 256 * 1024
# Longest a room's first client waits for other replicas' answers to the load step1 (normally a few ms).
CATCH_UP_WAIT: Final = 0.5
_BATCH_MESSAGES: Final = 512
_BATCH_BYTES: Final = 1024 * 1024
_OUTBOX_MAX_BYTES: Final = 128 * 1024 * 1024
_FULL_DIGEST_EVERY: Final = 6  # rounds: a room publishes its digest then even if nothing changed
_PUBLISH_BACKOFF_MAX: Final = 2.0

_PUBLISHED = {kind: metrics.BROKER_PUBLISHED.labels(kind_label(kind)) for kind in Kind}
_RECEIVED = {kind: metrics.BROKER_RECEIVED.labels(kind_label(kind)) for kind in Kind}
_HANDLE_ERRORS = metrics.BROKER_ERRORS.labels("handle")


def awareness_entries(message: bytes) -> list[AwarenessEntry]:
    """The entries of an encoded awareness message (as a room hands it to the replication)."""
    entries: list[AwarenessEntry] = []
    for decoded in decode_frame(message):
        if isinstance(decoded, AwarenessMessage):
            entries.extend(decode_awareness(decoded.update))
    return entries


def own_entries(room: Room, entries: list[AwarenessEntry], tracker: PresenceTracker) -> list[AwarenessEntry]:
    """The entries of an awareness message from a local peer that speak for this replica's own clients.

    y-websocket clients relay every awareness change they see, other clients' included, so a local
    peer's message is not all ours. A live state is ours if the room credited its client to one of our
    peers (``Peer.client_ids``: states it introduced and that were accepted); a removal is ours if the
    client was (the room forgets the credit before it hands the removal over).
    """
    ours = tracker.live_ids(room.name)
    owned: list[AwarenessEntry] = []
    for entry in entries:
        client_id = entry.client_id
        if entry.removed:
            if client_id in ours:
                owned.append(entry)
        # Known clients are checked in O(1); only unknown ones (new, or relayed) walk the peers, which is
        # the same order of work as the room's own broadcast of the message.
        elif client_id in ours or any(client_id in peer.client_ids for peer in room.peers):
            owned.append(entry)
    return owned


# -- presence of this replica's own peers ----------------------------------------------------------


class PresenceTracker:
    """Writes this replica's own awareness clients to the registry: shortly after they change (batched,
    so a cursor moving 30 times a second costs one write per ``flush_delay``), and again every
    ``refresh_interval`` while they stay, so their entries outlive the registry's TTL."""

    def __init__(
        self,
        registry: PresenceRegistry,
        replica_id: str,
        *,
        flush_delay: float = 0.2,
        refresh_interval: float = 20.0,
    ) -> None:
        self.registry = registry
        self.replica_id = replica_id
        self.flush_delay = flush_delay
        self.refresh_interval = refresh_interval
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


# -- embedded mode ----------------------------------------------------------------------------------


class PresenceOnly(SingleReplica):
    """One replica, no fan-out (``memory://``): the document hooks stay SingleReplica's no-ops, so the
    single-replica hot path costs nothing; only awareness feeds the (in-process) presence registry."""

    def __init__(self, registry: PresenceRegistry, replica_id: str, *, heartbeat_interval: float = 2.0) -> None:
        self.presence = registry
        self.replica_id = replica_id
        self.heartbeat_interval = heartbeat_interval
        self._tracker = PresenceTracker(registry, replica_id)
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"PresenceOnly({self.replica_id!r})"

    async def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._tracker.run(), name="presence-tracker"),
                loop.create_task(_heartbeats(self.presence, self.replica_id, self.heartbeat_interval)),
            ]

    async def room_unloaded(self, name: str) -> None:
        self._tracker.forget_room(name)

    def publish_awareness(self, room: Room, message: bytes) -> None:
        owned = own_entries(room, awareness_entries(message), self._tracker)
        if owned:
            self._tracker.observe(room.name, owned)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._tracker.close()
        with contextlib.suppress(BrokerError):
            await self.presence.leave(self.replica_id)
        await self.presence.close()

    def describe(self) -> str:
        return f"in-process (single replica); presence: {self.presence.describe()}"


async def _heartbeats(registry: PresenceRegistry, replica_id: str, interval: float) -> None:
    while True:
        with contextlib.suppress(BrokerError):
            await registry.heartbeat(replica_id)
        await asyncio.sleep(interval)


# -- several replicas -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    """This replica's link to one room's channel."""

    name: str
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    subscription: Subscription | None = None
    room: Room | None = None
    consumer: asyncio.Task[None] | None = None
    # Other replicas heard in this room (since they last said they left it).
    replicas: set[str] = field(default_factory=set)
    # Awareness clients shown here that belong to another replica's peers: client id → replica.
    remote_clients: dict[int, str] = field(default_factory=dict)
    changed: bool = False  # since the last digest round
    cached_digest: bytes | None = None
    # Catch-up on load: replicas whose answer to our load step1 has arrived, and those still awaited.
    answered: set[str] = field(default_factory=set)
    awaiting: set[str] = field(default_factory=set)
    caught_up: asyncio.Event | None = None


@dataclass(eq=False)
class _Lane:
    """One publishing queue, drained in batches by its own task."""

    name: str
    queue: deque[tuple[str, Envelope]] = field(default_factory=deque)
    size: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class BrokerReplication:
    """Replication through a Broker plus a PresenceRegistry (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        registry: PresenceRegistry,
        *,
        heartbeat_interval: float = 2.0,
        anti_entropy_interval: float = 15.0,
        store: DocumentStore | None = None,
    ) -> None:
        self.broker = broker
        self.presence = registry
        self.replica_id = broker.replica_id
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = 3 * heartbeat_interval
        self.anti_entropy_interval = anti_entropy_interval
        self._store = store
        self._links: dict[str, _Link] = {}
        self._origins: dict[str, Replica] = {}
        self._heard: dict[str, float] = {}  # replica → when we last heard anything from it (loop time)
        self._tracker = PresenceTracker(
            registry, self.replica_id, refresh_interval=max(1.0, registry_ttl(registry) / 3)
        )
        self._small = _Lane("small")
        self._bulk = _Lane("bulk")
        self._outbox_max = _OUTBOX_MAX_BYTES
        self._dirty: set[str] = set()  # rooms whose publishes failed: repaired once publishing works
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False

    def __repr__(self) -> str:
        return f"BrokerReplication({self.replica_id!r}, rooms={len(self._links)}, broker={self.broker!r})"

    def describe(self) -> str:
        return f"{self.broker.describe()}; presence: {self.presence.describe()}"

    async def start(self) -> None:
        """Connect in the background and start the pumps, heartbeat and anti-entropy (idempotent)."""
        if self._started:
            return
        self._started = True
        await self.broker.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(self._small), name="broker-pump"),
            loop.create_task(self._pump(self._bulk), name="broker-pump-bulk"),
            loop.create_task(self._heartbeat_loop(), name="replica-heartbeat"),
            loop.create_task(self._anti_entropy_loop(), name="anti-entropy"),
            loop.create_task(self._tracker.run(), name="presence-tracker"),
        ]

    # -- hooks (RoomManager) ------------------------------------------------------------------------

    async def room_loading(self, name: str) -> None:
        await self.start()
        link = _Link(name)
        self._links[name] = link
        try:
            link.subscription = await link.stack.enter_async_context(self.broker.subscribe(name))
        except (CollabError, OSError) as exc:
            # Serve the room from this replica alone rather than not at all.
            metrics.BROKER_ERRORS.labels("subscribe").inc()
            logger.warning("room %r: subscribing failed (%s); serving it without fan-out", name, exc)

    def room_loaded(self, room: Room) -> None:
        link = self._links.get(room.name)
        if link is None or link.subscription is None:
            return
        link.room = room
        link.consumer = asyncio.get_running_loop().create_task(self._consume(link), name=f"fan-in:{room.name}")
        self._ask(link, "load", announce_own=False, answer=True)

    async def room_ready(self, room: Room) -> None:
        """Hold the room's first client back until every other live replica that has clients in the room
        has answered our load step1 (bounded by CATCH_UP_WAIT). With room affinity there is usually no
        such replica, and a cold load costs one presence read."""
        link = self._links.get(room.name)
        if link is None or link.subscription is None:
            return
        try:
            entries = await asyncio.wait_for(self.presence.list(room.name), CATCH_UP_WAIT)
        except (CollabError, OSError, TimeoutError):
            return  # presence unreadable: serve what the store has, anti-entropy repairs the rest
        link.awaiting = {entry.replica for entry in entries} - {self.replica_id} - link.answered
        if not link.awaiting:
            return
        link.caught_up = asyncio.Event()
        try:
            await asyncio.wait_for(link.caught_up.wait(), CATCH_UP_WAIT)
        except TimeoutError:
            metrics.BROKER_ERRORS.labels("catch_up_timeout").inc()
            logger.warning(
                "room %r: no catch-up from %s within %.1fs; serving what the store has",
                room.name,
                ", ".join(sorted(link.awaiting)),
                CATCH_UP_WAIT,
            )
        finally:
            link.caught_up = None
            link.awaiting.clear()

    async def room_unloaded(self, name: str) -> None:
        # Popped before the first await: a reload of the same room may start while this one finishes.
        link = self._links.pop(name, None)
        self._tracker.forget_room(name)
        if link is None:
            return
        if link.consumer is not None:
            link.consumer.cancel()
        if link.room is not None and link.replicas and not self._closing:
            self._send(name, Kind.LEAVE, b"")
        await link.stack.aclose()
        if link.consumer is not None:
            await asyncio.gather(link.consumer, return_exceptions=True)

    def publish_update(self, room: Room, update: bytes) -> None:
        link = self._links.get(room.name)
        if link is None:
            return
        link.changed = True
        link.cached_digest = None
        if link.replicas:
            self._send(room.name, Kind.UPDATE, update)

    def publish_awareness(self, room: Room, message: bytes) -> None:
        entries = awareness_entries(message)
        owned = own_entries(room, entries, self._tracker)
        if not owned:
            return
        self._tracker.observe(room.name, owned)
        link = self._links.get(room.name)
        if link is None:
            return
        for entry in owned:
            # One of our peers speaks for this client now (it may have moved here from a dead replica).
            link.remote_clients.pop(entry.client_id, None)
        if link.replicas:
            self._send(
                room.name, Kind.AWARENESS, message if len(owned) == len(entries) else encode_awareness_message(owned)
            )

    async def close(self) -> None:
        self._closing = True
        for name in list(self._links):
            await self.room_unloaded(name)
        # What local peers did last (their awareness removals on shutdown) still goes out, briefly.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), 2.0)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        await self._tracker.close()
        with contextlib.suppress(BrokerError):
            await self.presence.leave(self.replica_id)
        await self.broker.close()
        await self.presence.close()

    # -- publishing ---------------------------------------------------------------------------------

    def _send(self, room: str, kind: Kind, payload: bytes, target: str = "") -> None:
        """Queue an envelope; never blocks. A full outbox drops its oldest envelopes (their rooms are
        repaired once publishing works again)."""
        envelope = Envelope(self.replica_id, kind, payload, target)
        lane = self._bulk if len(payload) > BULK_THRESHOLD else self._small
        lane.queue.append((room, envelope))
        lane.size += len(payload)
        while lane.size > self._outbox_max and len(lane.queue) > 1:
            lost_room, lost = lane.queue.popleft()
            lane.size -= len(lost.payload)
            self._dirty.add(lost_room)
            metrics.BROKER_DROPPED.labels("outbox_full").inc()
        lane.idle.clear()
        lane.wakeup.set()

    async def _pump(self, lane: _Lane) -> None:
        failures = 0
        queue = lane.queue
        while True:
            if not queue:
                lane.idle.set()
                metrics.BROKER_OUTBOX.set(len(self._small.queue) + len(self._bulk.queue))
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
            metrics.BROKER_OUTBOX.set(len(self._small.queue) + len(self._bulk.queue))
            try:
                await self.broker.publish_many(batch)
            except BrokerError as exc:
                failures += 1
                metrics.BROKER_ERRORS.labels("publish").inc()
                metrics.BROKER_DROPPED.labels("publish_failed").inc(len(batch))
                self._dirty.update(room for room, _ in batch)
                if failures == 1:
                    logger.warning("broker: publishing failed (%s); rooms are repaired once it works", exc)
                await asyncio.sleep(min(0.05 * 2**failures, _PUBLISH_BACKOFF_MAX))
                continue
            for _, envelope in batch:
                _PUBLISHED[envelope.kind].inc()
            if failures:
                logger.info("broker: publishing works again after %d failed attempts", failures)
                failures = 0
            if self._dirty:
                self._repair_dirty()

    def _repair_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            link = self._links.get(name)
            if link is not None and link.room is not None:
                self._ask(link, "publish_failed", announce_own=True)

    async def _drained(self) -> None:
        """Until both lanes are empty and nothing is in flight."""
        if not self._started:
            return
        for lane in (self._small, self._bulk):
            await lane.idle.wait()

    # -- receiving ----------------------------------------------------------------------------------

    async def _consume(self, link: _Link) -> None:
        subscription = link.subscription
        assert subscription is not None
        while True:
            try:
                batch = await subscription.next_batch()
            except EOFError:
                return
            for item in batch:
                try:
                    self._handle(link, item)
                except Exception as exc:
                    # One bad envelope costs only itself: the room, and every other room, go on.
                    _HANDLE_ERRORS.inc()
                    logger.warning(
                        "room %r: envelope %r could not be handled: %s",
                        link.name,
                        item,
                        exc,
                        extra={"room": link.name},
                        exc_info=logger.isEnabledFor(logging.DEBUG),
                    )

    def _origin(self, replica: str) -> Replica:
        origin = self._origins.get(replica)
        if origin is None:
            origin = self._origins[replica] = Replica(replica)
        return origin

    def _handle(self, link: _Link, item: Delivery) -> None:
        room = link.room
        if room is None:
            return
        if isinstance(item, Gap):
            self._ask(link, "resubscribe", announce_own=True)
            return
        sender = item.replica
        if sender == self.replica_id or (item.target and item.target != self.replica_id):
            return
        kind = item.kind
        _RECEIVED[kind].inc()
        self._heard[sender] = asyncio.get_running_loop().time()
        if kind is Kind.LEAVE:
            link.replicas.discard(sender)
            self._drop_awareness(link, [c for c, r in link.remote_clients.items() if r == sender])
            return
        discovered = sender not in link.replicas
        if discovered:
            link.replicas.add(sender)
            self._discovered(link, sender, item)
        if kind is Kind.UPDATE or kind is Kind.SYNC_STEP2:
            room.apply(item.payload, self._origin(sender))
            link.changed = True
            link.cached_digest = None
            if kind is Kind.SYNC_STEP2 and item.target == self.replica_id:
                link.answered.add(sender)
                link.awaiting.discard(sender)
                if link.caught_up is not None and not link.awaiting:
                    link.caught_up.set()
        elif kind is Kind.AWARENESS:
            self._apply_awareness(link, sender, item.payload, full=False)
        elif kind is Kind.SYNC_STEP1:
            self._spawn(self._answer_step1(link, sender, Step1.decode(item.payload)))
        elif kind is Kind.DIGEST:
            if not discovered:  # (discovery asked already)
                self._spawn(self._compare_digest(link, sender, item.payload))
        elif kind is Kind.AWARENESS_QUERY:
            self._send(link.name, Kind.AWARENESS_FULL, self._own_awareness(link), sender)
        elif kind is Kind.AWARENESS_FULL:
            self._apply_awareness(link, sender, item.payload, full=True)

    def _discovered(self, link: _Link, replica: str, first: Envelope) -> None:
        """First envelope from a replica in this room: until now we published nothing for it, so make
        sure it gets what we have (and our peers' awareness), and we get what it has."""
        room = link.room
        assert room is not None
        if not (first.kind is Kind.SYNC_STEP1 and Step1.decode(first.payload).echo):
            metrics.BROKER_REPAIRS.labels("discovery").inc()
            self._spawn(self._send_step1(link, replica, echo=True))
        if first.kind is not Kind.AWARENESS_QUERY and self._tracker.live_ids(link.name):
            self._send(link.name, Kind.AWARENESS_FULL, self._own_awareness(link), replica)

    def _ask(self, link: _Link, trigger: str, *, announce_own: bool, answer: bool = False) -> None:
        """Ask every replica holding the room for what we lack (and to ask us back), and who is there."""
        room = link.room
        assert room is not None
        metrics.BROKER_REPAIRS.labels(trigger).inc()
        self._spawn(self._send_step1(link, "", echo=True, answer=answer))
        self._send(link.name, Kind.AWARENESS_QUERY, b"")
        if announce_own:
            self._send(link.name, Kind.AWARENESS_FULL, self._own_awareness(link))

    async def _send_step1(self, link: _Link, target: str, *, echo: bool, answer: bool = False) -> None:
        room = link.room
        if room is None:
            return
        step1 = await Step1.of_room(room, echo=echo, answer=answer)
        self._send(link.name, Kind.SYNC_STEP1, step1.encode(), target)

    async def _compare_digest(self, link: _Link, sender: str, theirs: bytes) -> None:
        if link.room is not None and theirs != await self._digest(link):
            metrics.BROKER_REPAIRS.labels("digest").inc()
            await self._send_step1(link, sender, echo=True)

    async def _answer_step1(self, link: _Link, sender: str, step1: Step1) -> None:
        room = link.room
        if room is None:
            return
        try:
            diff = await room.diff(step1.state_vector)
        except CollabError as exc:
            logger.warning("room %r: replica %s sent an unusable step1: %s", link.name, sender, exc)
            return
        own_ds = digest_of_delete_set(await room.delete_set())
        if has_structs(diff) or step1.delete_set_digest != own_ds or step1.answer:
            metrics.BROKER_REPAIR_BYTES.inc(len(diff))
            self._send(link.name, Kind.SYNC_STEP2, diff, sender)
        if step1.echo:
            state = await room.state_vector()
            if step1.delete_set_digest != own_ds or lacks(
                decode_state_vector(state), decode_state_vector(step1.state_vector)
            ):
                self._send(link.name, Kind.SYNC_STEP1, Step1(state, own_ds, echo=False).encode(), sender)

    async def _digest(self, link: _Link) -> bytes:
        if link.cached_digest is None:
            assert link.room is not None
            link.cached_digest = await room_digest(link.room)
        return link.cached_digest

    # -- awareness ----------------------------------------------------------------------------------

    def _own_awareness(self, link: _Link) -> bytes:
        """Our own peers' awareness states in this room, as an awareness message (maybe empty)."""
        assert link.room is not None
        own = self._tracker.live_ids(link.name)
        entries = [entry for entry in link.room.awareness.entries() if entry.client_id in own]
        return encode_awareness_message(entries)

    def _apply_awareness(self, link: _Link, sender: str, message: bytes, *, full: bool) -> None:
        room = link.room
        assert room is not None
        own = self._tracker.live_ids(link.name)
        listed: set[int] = set()
        for decoded in decode_frame(message):
            if not isinstance(decoded, AwarenessMessage):
                continue
            entries = decode_awareness(decoded.update)
            for entry in entries:
                if entry.removed:
                    if link.remote_clients.get(entry.client_id) == sender:
                        del link.remote_clients[entry.client_id]
                elif entry.client_id not in own:
                    link.remote_clients[entry.client_id] = sender
                    listed.add(entry.client_id)
            if entries:
                room.apply_awareness(decoded.update, decoded.message, self._origin(sender))
        if full:
            # The sender listed every client it has: the others we attribute to it have left.
            self._drop_awareness(
                link, [cid for cid, owner in link.remote_clients.items() if owner == sender and cid not in listed]
            )

    def _drop_awareness(self, link: _Link, client_ids: list[int]) -> None:
        """Remove these remote clients' states here, as their own replica would have (clock + 1)."""
        room = link.room
        for client_id in client_ids:
            link.remote_clients.pop(client_id, None)
        if room is None or not client_ids:
            return
        doomed = set(client_ids)
        removals = [
            AwarenessEntry(entry.client_id, entry.clock + 1, "null")
            for entry in room.awareness.entries()
            if entry.client_id in doomed
        ]
        if removals:
            # Origin: this replica acting for the one that is gone; shown to local peers only.
            room.apply_awareness(encode_awareness(removals), encode_awareness_message(removals), self._origin(""))

    # -- heartbeat, dead replicas -------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        healthy_since: float | None = None
        while True:
            try:
                still_there = await self.presence.heartbeat(self.replica_id)
                if not still_there:
                    # Our own key had vanished: the registry was reset (or we were cut off for a TTL).
                    # Everyone's keys may be missing for a moment; give them a full TTL before judging,
                    # and put our peers' presence back.
                    healthy_since = None
                    self._tracker.rewrite_all()
                if not self.broker.connected:
                    healthy_since = None
                elif healthy_since is None:
                    healthy_since = loop.time()
            except BrokerError as exc:
                metrics.BROKER_ERRORS.labels("heartbeat").inc()
                if healthy_since is not None:
                    logger.warning("replica heartbeat failed: %s", exc)
                healthy_since = None
            # Only judge others once their heartbeats had a full TTL to reach the registry since it came
            # back (after a Redis restart every key is gone, the living included).
            if healthy_since is not None and loop.time() - healthy_since >= self.heartbeat_ttl:
                try:
                    await self._sweep()
                except BrokerError as exc:
                    metrics.BROKER_ERRORS.labels("heartbeat").inc()
                    logger.debug("dead-replica sweep failed: %s", exc)
            await asyncio.sleep(self.heartbeat_interval)

    async def _sweep(self) -> None:
        candidates: set[str] = set()
        for link in self._links.values():
            candidates.update(link.replicas)
            candidates.update(link.remote_clients.values())
        candidates.discard(self.replica_id)
        candidates.discard("")
        if not candidates:
            return
        alive = await self.presence.alive(candidates)
        now = asyncio.get_running_loop().time()
        dead = {
            replica
            for replica in candidates - alive
            if now - self._heard.get(replica, float("-inf")) > self.heartbeat_ttl
        }
        if not dead:
            return
        for replica in dead:
            metrics.REPLICAS_DEAD.inc()
            self._heard.pop(replica, None)
            self._origins.pop(replica, None)
            logger.warning(
                "replica %s stopped heartbeating; dropping its presence", replica, extra={"replica": replica}
            )
        for link in list(self._links.values()):
            gone = [cid for cid, owner in link.remote_clients.items() if owner in dead]
            held = dead & link.replicas
            link.replicas -= dead
            self._drop_awareness(link, gone)
            if gone or held:
                self._spawn(self._prune(link.name, dead))
            if held and self._store is not None and link.room is not None:
                self._spawn(self._reconcile(link))

    async def _prune(self, room: str, dead: set[str]) -> None:
        try:
            await self.presence.prune(room, dead)
        except BrokerError as exc:
            metrics.BROKER_ERRORS.labels("presence").inc()
            logger.debug("pruning presence of room %r failed: %s", room, exc)

    async def _reconcile(self, link: _Link) -> None:
        """A replica holding this room died: it may have applied and published edits it never committed.
        We have them in memory, so append to the store whatever it lacks (duplicates are harmless)."""
        room, store = link.room, self._store
        assert room is not None and store is not None
        try:
            stored = await store.load(link.name)
            stored_doc: Doc[Any] = build_doc(link.name, stored.snapshot, stored.updates) if stored else Doc()
            if self._links.get(link.name) is not link:
                return
            missing = await room.diff(stored_doc.get_state())
            own_ds = digest_of_delete_set(await room.delete_set())
            if has_structs(missing) or own_ds != delete_set_digest(stored_doc):
                await store.append_many([(link.name, missing)])
                logger.info("room %r: stored %d bytes only a dead replica had committed", link.name, len(missing))
        except StoreError as exc:
            metrics.BROKER_ERRORS.labels("reconcile").inc()
            logger.warning("room %r: reconciling with the store failed: %s", link.name, exc)

    # -- anti-entropy -------------------------------------------------------------------------------

    async def _anti_entropy_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.anti_entropy_interval * random.uniform(0.8, 1.2))
            rounds += 1
            full = rounds % _FULL_DIGEST_EVERY == 0
            for index, link in enumerate(list(self._links.values())):
                if link.room is None or not (full or (link.changed and link.replicas)):
                    continue
                link.changed = False
                self._send(link.name, Kind.DIGEST, await self._digest(link))
                if index % 100 == 99:
                    await asyncio.sleep(0)  # thousands of rooms: let the sockets breathe in between

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def registry_ttl(registry: PresenceRegistry) -> float:
    ttl = getattr(registry, "ttl", 60.0)
    return float(ttl)


__all__ = ["BrokerReplication", "PresenceOnly", "PresenceTracker", "awareness_entries"]
