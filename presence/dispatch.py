"""Receiving: each loaded room's consumer, which hands what arrives on its channel to the part it is for.

One task per room (started by presence.broker_replication once the room is loaded) takes the room's
subscription (presence.broker) batch by batch and handles each envelope, awaiting it before the next,
so one room's envelopes are applied strictly in the order its channel delivered them. Rooms do not wait
for each other: each has its own bounded queue and task, and an envelope that cannot be handled (bytes
that do not decode, a room that refuses them) is counted and skipped.

What goes where:

    UPDATE, SYNC_STEP2        room.apply_remote(update, Replica(sender)): shown to local peers, never
                              stored or published again (the origin rule; collab_server.origins)
    SYNC_STEP1, DIGEST, Gap   presence.repair
    AWARENESS, AWARENESS_*    presence.awareness_relay
    LEAVE                     the sender unloaded the room: stop publishing to it on its account
    (every envelope)          presence.liveness hears the sender: it is alive
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from collab_server import metrics
from collab_server.origins import Replica
from presence.broker import Delivery, Gap, Kind, kind_label
from presence.sync import Step1

if TYPE_CHECKING:
    from presence.awareness_relay import AwarenessRelay
    from presence.link import RoomLink
    from presence.liveness import DeadReplicas
    from presence.repair import Repair

logger = logging.getLogger(__name__)

_EMPTY_UPDATE: Final = b"\x00\x00"

_RECEIVED = {kind: metrics.BROKER_RECEIVED.labels(kind_label(kind)) for kind in Kind}
_HANDLE_ERRORS = metrics.BROKER_ERRORS.labels("handle")


class Dispatch:
    """Routes the envelopes of every loaded room (see the module docstring)."""

    def __init__(self, replica_id: str, repair: Repair, relay: AwarenessRelay, dead: DeadReplicas) -> None:
        self.replica_id = replica_id
        self.repair = repair
        self.relay = relay
        self.dead = dead

    def __repr__(self) -> str:
        return f"Dispatch({self.replica_id!r})"

    async def consume(self, link: RoomLink) -> None:
        """Handle the room's envelopes until its subscription closes."""
        subscription = link.subscription
        assert subscription is not None
        while True:
            try:
                batch = await subscription.next_batch()
            except EOFError:
                return
            for item in batch:
                try:
                    await self.handle(link, item)
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

    async def handle(self, link: RoomLink, item: Delivery) -> None:
        room = link.room
        if room is None:
            return
        if isinstance(item, Gap):
            await self.repair.ask(link, "resubscribe", announce_own=True)
            return
        sender = item.replica
        if sender == self.replica_id or (item.target and item.target != self.replica_id):
            return
        kind = item.kind
        _RECEIVED[kind].inc()
        self.dead.heard(sender)
        if kind is Kind.LEAVE:
            link.replicas.discard(sender)
            self.relay.forget_replica(link, sender)
            return
        discovered = sender not in link.replicas
        if discovered:
            link.replicas.add(sender)
            await self.repair.discovered(link, sender, item)
        if kind is Kind.UPDATE or kind is Kind.SYNC_STEP2:
            await room.apply_remote(item.payload, Replica(sender))
            link.touch()
            if item.payload != _EMPTY_UPDATE:
                link.editors.add(sender)
            if kind is Kind.SYNC_STEP2 and item.target == self.replica_id:
                self.repair.answered(link, sender)
        elif kind is Kind.AWARENESS:
            self.relay.apply(link, sender, item.payload, full=False)
        elif kind is Kind.SYNC_STEP1:
            await self.repair.answer(link, sender, Step1.decode(item.payload))
        elif kind is Kind.DIGEST:
            if not discovered:  # discovery asked already
                await self.repair.compare(link, sender, item.payload)
        elif kind is Kind.AWARENESS_QUERY:
            self.relay.announce(link, sender)
        elif kind is Kind.AWARENESS_FULL:
            self.relay.apply(link, sender, item.payload, full=True)
