"""What an incoming frame must pass before its messages reach the room.

``FrameGate.admit`` runs once per frame, before anything is applied: it charges the peer's byte and
message rates (``pause`` then says how long to wait before the next frame), decodes strictly within
its bounds (``protocol.FrameLimits``), then applies the per-frame rules; ``check`` runs for each
message just before the room handles it (awareness is decoded there, once: the room reuses it):

- identical sync step1s are answered once, and a frame may carry at most ``MAX_STEP1_PER_FRAME``
  different ones: each answer is a diff of the whole document (5,000 step1s against a 3 MB document
  would otherwise queue gigabytes);
- query-awareness is answered once per frame;
- an awareness message may not take the room past its limit of live states, nor make one connection
  the source of more than ``max_clients_per_peer`` of them (a y-websocket client has one; it also
  echoes other clients' states, which are live already and do not count);
- an update may not take the document past its size quota.

It raises ProtocolError (permanent) or LimitExceeded (transient); the endpoint maps them to close codes.
"""

from __future__ import annotations

from collections.abc import Collection

from collab_server.errors import DocumentTooLarge, ProtocolError, RoomOverloaded
from collab_server.limits import DocumentSizes, PeerRates
from collab_server.protocol import (
    AwarenessMessage,
    FrameLimits,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_awareness,
    decode_frame,
)
from collab_server.room import Room

MAX_STEP1_PER_FRAME = 4


class FrameGate:
    """One peer's checks on its incoming frames."""

    __slots__ = ("_document_sizes", "_limits", "_max_awareness_states", "_max_clients_per_peer", "_rates")

    def __init__(
        self,
        limits: FrameLimits,
        rates: PeerRates,
        document_sizes: DocumentSizes,
        max_awareness_states: int,
        max_clients_per_peer: int = 16,
    ) -> None:
        self._limits = limits
        self._rates = rates
        self._document_sizes = document_sizes
        self._max_awareness_states = max_awareness_states
        self._max_clients_per_peer = max_clients_per_peer

    def admit(self, frame: bytes) -> list[Message]:
        """The messages of ``frame`` to handle, in order; raises if the frame is refused."""
        self._rates.charge_frame(len(frame))
        messages = decode_frame(frame, self._limits)
        self._rates.charge_messages(len(messages))
        if len(messages) == 1:
            return messages
        admitted: list[Message] = []
        step1s: set[bytes] = set()
        queried = False
        for message in messages:
            if isinstance(message, SyncStep1):
                if message.state_vector in step1s:
                    continue
                if len(step1s) == MAX_STEP1_PER_FRAME:
                    raise ProtocolError(f"frame holds more than {MAX_STEP1_PER_FRAME} different sync step1s")
                step1s.add(message.state_vector)
            elif isinstance(message, QueryAwareness):
                if queried:
                    continue
                queried = True
            admitted.append(message)
        return admitted

    def pause(self) -> float:
        """Seconds to wait before reading the next frame: a peer past its rates is slowed, then refused
        (``RateExceeded``; ``limits.PeerRates``)."""
        return self._rates.pause()

    def check(
        self, message: Message, room: Room, *, can_write: bool = True, introduced: Collection[int] = ()
    ) -> None:
        """Checks that depend on the room's state at the moment ``message`` is handled. ``introduced``: the
        awareness clients this peer brought into the room and that are still there."""
        if isinstance(message, AwarenessMessage):
            entries = decode_awareness(message.update, self._limits)
            new = room.awareness.new_clients(entries)
            if new and len(introduced) + len(new) > self._max_clients_per_peer:
                raise ProtocolError(f"one connection may bring at most {self._max_clients_per_peer} awareness clients")
            if room.awareness.would_exceed(entries, self._max_awareness_states):
                raise RoomOverloaded(f"the room already holds {self._max_awareness_states} awareness states")
        elif isinstance(message, SyncUpdate | SyncStep2) and can_write:
            if not self._document_sizes.admits(room, len(message.update)):
                raise DocumentTooLarge(
                    f"the document would grow past its limit of {self._document_sizes.max_bytes} bytes"
                )
