"""Repair: how replicas holding a room find out what one of them lacks, and send only that.

The exchange (payloads in presence.sync): a replica publishes a SYNC_STEP1 (its state vector and the
digest of its delete set); each replica that has something the asker lacks answers with a SYNC_STEP2
(a Yjs update), and if the asker has something *it* lacks (the step1 asks for an "echo"), it sends a
step1 back and is answered the same way. It runs

- **on load** (catch-up): the room's first client is held back (``catch_up``) until every replica that
  has clients in the room answered, so that nobody is answered from a document that lacks edits another
  replica has not stored yet (bounded by ``CATCH_UP_WAIT``);
- **on discovery**: the first envelope from a replica not yet known in the room (until then neither
  published anything per edit for the other);
- **after a loss**: a Gap from the broker (resubscribe, overflow, a lost part), or publishes that failed
  (presence.outbox); the room's awareness is exchanged again too (presence.awareness_relay);
- **on a differing digest** (anti-entropy): every ``anti_entropy_interval`` (jittered) each room that
  changed, and every room on every sixth round, publishes a DIGEST; a replica whose own differs asks.

Everything about the document is read through the room's async interface (``SharedRoom``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Final

from collab_server import metrics
from collab_server.errors import CollabError
from collab_server.protocol import decode_state_vector
from presence.broker import Envelope, Kind
from presence.sync import Step1, delete_set_digest, has_structs, lacks, room_digest

if TYPE_CHECKING:
    from presence.awareness_relay import AwarenessRelay
    from presence.link import RoomLink
    from presence.outbox import Outbox
    from presence.registry import PresenceRegistry

logger = logging.getLogger(__name__)

# Longest a room's first client waits for other replicas' answers to the load step1 (normally a few ms).
CATCH_UP_WAIT: Final = 0.5
_FULL_DIGEST_EVERY: Final = 6  # rounds: a room publishes its digest then even if nothing changed


class Repair:
    """The state-vector exchange of every loaded room (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        relay: AwarenessRelay,
        registry: PresenceRegistry,
        links: dict[str, RoomLink],
        *,
        anti_entropy_interval: float,
    ) -> None:
        self.outbox = outbox
        self.relay = relay
        self.registry = registry
        self.links = links
        self.anti_entropy_interval = anti_entropy_interval
        self.replica_id = outbox.replica_id

    def __repr__(self) -> str:
        return f"Repair({self.replica_id!r}, every {self.anti_entropy_interval}s)"

    async def ask(self, link: RoomLink, trigger: str, *, announce_own: bool, answer: bool = False) -> None:
        """Ask every replica holding the room for what we lack (and to ask us back), and who is there."""
        room = link.room
        assert room is not None
        metrics.BROKER_REPAIRS.labels(trigger).inc()
        step1 = await Step1.of(room, echo=True, answer=answer)
        self.outbox.publish(link.name, Kind.SYNC_STEP1, step1.encode())
        self.relay.query(link, announce_own=announce_own)

    async def discovered(self, link: RoomLink, replica: str, first: Envelope) -> None:
        """First envelope from a replica in this room: until now we published nothing for it, so make
        sure it gets what we have (and our peers' awareness), and we get what it has."""
        room = link.room
        assert room is not None
        if not (first.kind is Kind.SYNC_STEP1 and Step1.decode(first.payload).echo):
            metrics.BROKER_REPAIRS.labels("discovery").inc()
            step1 = await Step1.of(room, echo=True)
            self.outbox.publish(link.name, Kind.SYNC_STEP1, step1.encode(), replica)
        if first.kind is not Kind.AWARENESS_QUERY and self.relay.has_own_clients(link):
            self.relay.announce(link, replica)

    async def answer(self, link: RoomLink, sender: str, step1: Step1) -> None:
        """Send ``sender`` what its step1 says it lacks; ask back if it has what we lack."""
        room = link.room
        assert room is not None
        diff = await room.diff(step1.state_vector)
        own_deletions = delete_set_digest(await room.delete_set())
        if has_structs(diff) or step1.delete_set_digest != own_deletions or step1.answer:
            metrics.BROKER_REPAIR_BYTES.inc(len(diff))
            self.outbox.publish(link.name, Kind.SYNC_STEP2, diff, sender)
        if step1.echo:
            state = await room.state_vector()
            if step1.delete_set_digest != own_deletions or lacks(
                decode_state_vector(state), decode_state_vector(step1.state_vector)
            ):
                self.outbox.publish(
                    link.name, Kind.SYNC_STEP1, Step1(state, own_deletions, echo=False).encode(), sender
                )

    async def compare(self, link: RoomLink, sender: str, their_digest: bytes) -> None:
        """Another replica's DIGEST: if ours differs, one of us lacks something; ask (with an echo)."""
        room = link.room
        assert room is not None
        if their_digest != await self.digest(link):
            metrics.BROKER_REPAIRS.labels("digest").inc()
            step1 = await Step1.of(room, echo=True)
            self.outbox.publish(link.name, Kind.SYNC_STEP1, step1.encode(), sender)

    async def digest(self, link: RoomLink) -> bytes:
        """The room's digest, computed again only after its document changed."""
        cached = link.cached_digest
        if cached is not None and cached[0] == link.version:
            return cached[1]
        assert link.room is not None
        version = link.version
        value = await room_digest(link.room)
        if link.version == version:  # no change landed while the room computed it
            link.cached_digest = (version, value)
        return value

    # -- catch-up on load -----------------------------------------------------------------------------

    async def catch_up(self, link: RoomLink) -> None:
        """Return once every other live replica that has clients in the room has answered our load step1
        (bounded by CATCH_UP_WAIT). With room affinity there is usually no such replica, and a cold load
        costs one presence read."""
        try:
            entries = await asyncio.wait_for(self.registry.list(link.name), CATCH_UP_WAIT)
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
                link.name,
                ", ".join(sorted(link.awaiting)),
                CATCH_UP_WAIT,
                extra={"room": link.name},
            )
        finally:
            link.caught_up = None
            link.awaiting.clear()

    def answered(self, link: RoomLink, sender: str) -> None:
        """A SYNC_STEP2 meant for us arrived from ``sender``."""
        link.answered.add(sender)
        link.awaiting.discard(sender)
        if link.caught_up is not None and not link.awaiting:
            link.caught_up.set()

    # -- anti-entropy ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish the digests of the rooms that changed (all of them every sixth round), forever."""
        rounds = 0
        while True:
            await asyncio.sleep(self.anti_entropy_interval * random.uniform(0.8, 1.2))
            rounds += 1
            full = rounds % _FULL_DIGEST_EVERY == 0
            for index, link in enumerate(list(self.links.values())):
                if link.room is None or not (full or (link.changed and link.replicas)):
                    continue
                link.changed = False
                try:
                    self.outbox.publish(link.name, Kind.DIGEST, await self.digest(link))
                except (CollabError, ValueError) as exc:
                    logger.warning("room %r: digest failed: %s", link.name, exc, extra={"room": link.name})
                if index % 100 == 99:
                    await asyncio.sleep(0)  # thousands of rooms: let the sockets breathe in between
