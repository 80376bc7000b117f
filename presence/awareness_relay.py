"""Awareness between replicas: cursors and names of every room's clients, whichever replica they are on.

Out: a local peer's awareness message goes to the other replicas holding the room as an AWARENESS
envelope, cut down to the entries of this replica's own clients (presence.tracker decides which). In:
another replica's AWARENESS is applied to the room with a ``Replica`` origin (relayed to local peers
only), and the relay remembers which replica each remote client belongs to (``RoomLink.remote_clients``).

That memory is what lets a replica clean up for another: when a replica says it left the room (LEAVE),
when its AWARENESS_FULL no longer lists a client, or when it died (presence.liveness), its clients'
states are removed here as their own replica would have removed them (clock + 1, state ``null``).
AWARENESS_QUERY asks the replicas holding a room for AWARENESS_FULL: every state their own peers have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collab_server.origins import Replica
from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    decode_awareness,
    decode_frame,
    encode_awareness,
    encode_awareness_message,
)
from presence.broker import Kind

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom
    from presence.link import RoomLink
    from presence.outbox import Outbox
    from presence.tracker import PresenceTracker

# The origin of removals this replica makes on behalf of a replica that is gone: shown to local peers only.
_ON_BEHALF: Replica = Replica("")


class AwarenessRelay:
    """Awareness of every loaded room across replicas (see the module docstring)."""

    def __init__(self, outbox: Outbox, tracker: PresenceTracker) -> None:
        self.outbox = outbox
        self.tracker = tracker

    def __repr__(self) -> str:
        return f"AwarenessRelay({self.outbox.replica_id!r})"

    def publish_local(self, room: SharedRoom, link: RoomLink | None, message: bytes) -> None:
        """A local peer's awareness message: track our own clients' states, and tell the other replicas."""
        entries, owned = self.tracker.observe_message(room, message)
        if not owned or link is None:
            return
        for entry in owned:
            # One of our peers speaks for this client now (it may have moved here from a dead replica).
            link.remote_clients.pop(entry.client_id, None)
        if link.replicas:
            relayed = message if len(owned) == len(entries) else encode_awareness_message(owned)
            self.outbox.publish(room.name, Kind.AWARENESS, relayed)

    def query(self, link: RoomLink, *, announce_own: bool) -> None:
        """Ask every replica holding the room who is there; with ``announce_own``, say who is here."""
        self.outbox.publish(link.name, Kind.AWARENESS_QUERY, b"")
        if announce_own:
            self.announce(link)

    def announce(self, link: RoomLink, target: str = "") -> None:
        """Send AWARENESS_FULL: our own peers' states in the room (maybe none), to one replica or all."""
        self.outbox.publish(link.name, Kind.AWARENESS_FULL, self._own_message(link), target)

    def has_own_clients(self, link: RoomLink) -> bool:
        return bool(self.tracker.live_ids(link.name))

    def apply(self, link: RoomLink, sender: str, message: bytes, *, full: bool) -> None:
        """Apply another replica's AWARENESS (``full``: AWARENESS_FULL) message to the room."""
        room = link.room
        assert room is not None
        own = self.tracker.live_ids(link.name)
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
                room.apply_remote_awareness(decoded.update, decoded.message, Replica(sender))
        if full:
            # The sender listed every client it has: the others we attribute to it have left.
            self.drop(
                link, [cid for cid, owner in link.remote_clients.items() if owner == sender and cid not in listed]
            )

    def forget_replica(self, link: RoomLink, replica: str) -> None:
        """``replica`` left the room, or died: its clients leave with it."""
        self.drop(link, [cid for cid, owner in link.remote_clients.items() if owner == replica])

    def drop(self, link: RoomLink, client_ids: list[int]) -> None:
        """Remove these remote clients' states here, as their own replica would have (clock + 1)."""
        room = link.room
        for client_id in client_ids:
            link.remote_clients.pop(client_id, None)
        if room is None or not client_ids:
            return
        doomed = set(client_ids)
        removals = [
            AwarenessEntry(entry.client_id, entry.clock + 1, "null")
            for entry in room.awareness_entries()
            if entry.client_id in doomed
        ]
        if removals:
            room.apply_remote_awareness(encode_awareness(removals), encode_awareness_message(removals), _ON_BEHALF)

    def _own_message(self, link: RoomLink) -> bytes:
        """Our own peers' awareness states in this room, as an awareness message (maybe empty)."""
        assert link.room is not None
        own = self.tracker.live_ids(link.name)
        return encode_awareness_message([entry for entry in link.room.awareness_entries() if entry.client_id in own])
