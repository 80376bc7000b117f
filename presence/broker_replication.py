"""Replication over a Broker: the rooms of this replica kept in step with the same rooms elsewhere.

:class:`BrokerReplication` is what RoomManager gets in a cluster (``COLLAB_BROKER_URL=redis://…``): it
implements the hooks of ``collab_server.replication.Replication`` and talks to each room only through
``SharedRoom``. It is the one place that assembles the parts; each part is a module of its own:

    presence.outbox           everything this replica publishes: queued, batched, two lanes
    presence.dispatch         each room's consumer: what arrives, handed to the part it is for
    presence.repair           state-vector exchange: catch-up on load, after losses, anti-entropy
    presence.awareness_relay  cursors across replicas, and whose remote client is whose
    presence.liveness         the heartbeat, and cleaning up after a replica that died
    presence.tracker          our own clients in the presence registry
    presence.link             the per-room state they share

How one edit travels: a local peer's update is applied by its room, which hands it to RoomManager
(stored through the writer) and to ``publish_update`` here; if another replica is known to hold the
room, the update is queued in the outbox as an UPDATE envelope and published on the room's channel
(presence.redis_broker, in the format of presence.redis_wire). On the other replica the room's consumer
(presence.dispatch) applies it with a ``Replica`` origin: its peers are sent the update, and it is
never stored or published again (docs/replication.md names every file on the way). A room no other
replica is known to hold publishes nothing per edit: a replica that loads it later asks with its load
step1 and is answered with everything, and the first envelope heard from a replica not yet known in
the room starts an exchange both ways (presence.repair). With room-affinity routing that is most rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from collab_server import metrics
from collab_server.errors import BrokerError, CollabError
from presence.awareness_relay import AwarenessRelay
from presence.broker import Kind
from presence.dispatch import Dispatch
from presence.link import RoomLink
from presence.liveness import DeadReplicas, Heartbeat, heartbeat_ttl
from presence.outbox import Outbox
from presence.repair import Repair
from presence.tracker import PresenceTracker

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom
    from persistence.base import UpdateWriter
    from presence.broker import Broker
    from presence.registry import PresenceRegistry

logger = logging.getLogger(__name__)


class BrokerReplication:
    """Replication through a Broker plus a PresenceRegistry (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        registry: PresenceRegistry,
        *,
        heartbeat_interval: float = 1.0,
        anti_entropy_interval: float = 15.0,
        writer: UpdateWriter | None = None,
    ) -> None:
        self.broker = broker
        self.presence = registry
        self.replica_id = broker.replica_id
        self.links: dict[str, RoomLink] = {}
        self.outbox = Outbox(broker, on_recovered=self._repair_rooms)
        self.tracker = PresenceTracker(registry, self.replica_id)
        self.relay = AwarenessRelay(self.outbox, self.tracker)
        self.repair = Repair(self.outbox, self.relay, registry, self.links, anti_entropy_interval=anti_entropy_interval)
        self.dead = DeadReplicas(
            registry,
            self.replica_id,
            self.links,
            self.relay,
            ttl=heartbeat_ttl(heartbeat_interval),
            writer=writer,
            spawn=self._spawn,
        )
        self.heartbeat = Heartbeat(
            registry,
            self.replica_id,
            heartbeat_interval,
            on_reset=self.tracker.rewrite_all,
            connected=lambda: broker.connected,
            check=self.dead.check,
        )
        self.dispatch = Dispatch(self.replica_id, self.repair, self.relay, self.dead)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False

    def __repr__(self) -> str:
        return f"BrokerReplication({self.replica_id!r}, rooms={len(self.links)}, broker={self.broker!r})"

    def describe(self) -> str:
        return f"{self.broker.describe()}; presence: {self.presence.describe()}"

    async def start(self) -> None:
        """Connect in the background and start publishing, the heartbeat and anti-entropy (idempotent)."""
        if self._started:
            return
        self._started = True
        await self.broker.start()
        self.outbox.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.heartbeat.run(), name="replica-heartbeat"),
            loop.create_task(self.repair.run(), name="anti-entropy"),
            loop.create_task(self.tracker.run(), name="presence-tracker"),
        ]

    # -- hooks (RoomManager) ------------------------------------------------------------------------

    async def room_loading(self, name: str) -> None:
        await self.start()
        link = RoomLink(name)
        self.links[name] = link
        try:
            link.subscription = await link.stack.enter_async_context(self.broker.subscribe(name))
        except (CollabError, OSError) as exc:
            # Serve the room from this replica alone rather than not at all.
            metrics.BROKER_ERRORS.labels("subscribe").inc()
            logger.warning("room %r: subscribing failed (%s); serving it without fan-out", name, exc)

    def room_loaded(self, room: SharedRoom) -> None:
        link = self.links.get(room.name)
        if link is None or link.subscription is None:
            return
        link.room = room
        link.consumer = asyncio.get_running_loop().create_task(self._serve(link), name=f"fan-in:{room.name}")

    async def room_ready(self, room: SharedRoom) -> None:
        link = self.links.get(room.name)
        if link is not None and link.subscription is not None:
            await self.repair.catch_up(link)

    async def room_unloaded(self, name: str) -> None:
        # Popped before the first await: a reload of the same room may start while this one finishes.
        link = self.links.pop(name, None)
        self.tracker.forget_room(name)
        if link is None:
            return
        if link.consumer is not None:
            link.consumer.cancel()
        if link.room is not None and link.replicas and not self._closing:
            self.outbox.publish(name, Kind.LEAVE, b"")
        await link.stack.aclose()
        if link.consumer is not None:
            await asyncio.gather(link.consumer, return_exceptions=True)

    def publish_update(self, room: SharedRoom, update: bytes) -> None:
        link = self.links.get(room.name)
        if link is None:
            return
        link.touch()
        if link.replicas:
            self.outbox.publish(room.name, Kind.UPDATE, update)

    def publish_awareness(self, room: SharedRoom, message: bytes) -> None:
        self.relay.publish_local(room, self.links.get(room.name), message)

    async def close(self) -> None:
        self._closing = True
        for name in list(self.links):
            await self.room_unloaded(name)
        # What local peers did last (their awareness removals on shutdown) still goes out, briefly.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.drained(), 2.0)
        await self.outbox.close()
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        await self.tracker.close()
        with contextlib.suppress(BrokerError):
            await self.presence.leave(self.replica_id)
        await self.broker.close()
        await self.presence.close()

    # -- internals ----------------------------------------------------------------------------------

    async def _serve(self, link: RoomLink) -> None:
        """The room's consumer: ask the replicas holding the room for what we lack, then take what comes."""
        await self._ask(link, "load", announce_own=False, answer=True)
        await self.dispatch.consume(link)

    def _repair_rooms(self, names: set[str]) -> None:
        """Envelopes of these rooms were lost on the way out; publishing works again."""
        for name in names:
            link = self.links.get(name)
            if link is not None and link.room is not None:
                self._spawn(self._ask(link, "publish_failed", announce_own=True))

    async def _ask(self, link: RoomLink, trigger: str, *, announce_own: bool, answer: bool = False) -> None:
        try:
            await self.repair.ask(link, trigger, announce_own=announce_own, answer=answer)
        except (CollabError, ValueError) as exc:
            # The room could not say what it has (anti-entropy asks again later).
            logger.warning("room %r: asking other replicas failed: %s", link.name, exc, extra={"room": link.name})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
