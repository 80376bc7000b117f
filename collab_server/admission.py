"""Admission of room sockets: how many this replica holds, how many wait to join, and how many (and how
many distinct rooms) one client address holds, each against its cap.

``Admission.admit`` is asked before the websocket is accepted. A socket past a cap is refused there, with
an HTTP status at the upgrade (``Refusal``: 503 or 429, a Retry-After and a one-line body): no socket is
opened, no document byte is sent, nothing is loaded or authenticated. A proxy can act on the status (nginx
``proxy_next_upstream http_503`` sends the client to another replica); a browser shows a failed connection
(close 1006, no reason: the status is not exposed to scripts), and the y-websocket provider retries with
its exponential backoff, as after a transient close code. Sockets already open are never touched by a cap:
it only decides who gets in.

- ``max_connections``: room sockets on this replica, joined or waiting to (503). Beyond it a replica would
  run out of file descriptors or memory, and fall over for everyone; better to turn the newcomer away.
- ``max_pending``: sockets accepted but not in their room yet (authenticating, waiting for the room to
  load). They pile up when the identity provider or the store stalls (503).
- ``max_per_address``: room sockets from one client address (429).
- ``max_rooms_per_address``: distinct rooms one client address has sockets in at once (429); a further
  socket to a room it holds already is not a new room.

The client address is the one uvicorn puts in the ASGI scope: the peer's, or behind a proxy the one its
``X-Forwarded-For`` names, but only when the peer is a trusted proxy (``FORWARDED_ALLOW_IPS``, default
127.0.0.1). This is the same address the room-load quota (collab_server.limits) counts.

Per connection this costs no object: the endpoint keeps the address and room it was admitted with and
hands them back to ``joined`` and ``release``. Per address: one ``AddressLoad`` while it has a socket open
(about 100 bytes with its entry for an address in one room, 320 in two: docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from collab_server import metrics
from collab_server.fdlimit import connection_room

if TYPE_CHECKING:
    from collab_server.settings import Settings


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a socket is not admitted: the HTTP status of the upgrade's answer, the metric reason, the text
    of the answer's body (our words), and the seconds after which a retry makes sense."""

    status: int
    reason: str
    text: str
    retry_after: int


class AddressLoad:
    """The room sockets one client address holds: in all, and per room.

    Most addresses hold sockets in one room (a browser tab, a client behind its own address): while they
    do, that room is a slot, and the per-room dict (about 230 bytes, a twentieth of an idle connection)
    exists only for an address in several rooms at once."""

    __slots__ = ("_per_room", "_room", "connections")

    def __init__(self) -> None:
        self.connections = 0
        self._room: str | None = None  # the one room all the sockets are in, while _per_room is None
        self._per_room: dict[str, int] | None = None

    def rooms(self) -> int:
        """Distinct rooms held."""
        if self._per_room is not None:
            return len(self._per_room)
        return 1 if self.connections else 0

    def holds(self, room: str) -> bool:
        if self._per_room is not None:
            return room in self._per_room
        return self.connections > 0 and room == self._room

    def add(self, room: str) -> None:
        per_room = self._per_room
        if per_room is not None:
            per_room[room] = per_room.get(room, 0) + 1
        elif not self.connections or room == self._room:
            self._room = room
        else:
            assert self._room is not None
            self._per_room = {self._room: self.connections, room: 1}
        self.connections += 1

    def remove(self, room: str) -> None:
        self.connections -= 1
        per_room = self._per_room
        if per_room is None:
            return
        left = per_room[room] - 1
        if left:
            per_room[room] = left
        else:
            del per_room[room]
        if len(per_room) == 1:  # back to one room: back to the slot
            self._room = next(iter(per_room))
            self._per_room = None


class Admission:
    """The counts and caps of this replica's room sockets (lifespan state ``admission``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(
            max_connections=connection_room(settings.max_connections),
            max_pending=settings.max_pending_connections,
            max_per_address=settings.max_connections_per_address,
            max_rooms_per_address=settings.max_rooms_per_address,
        )

    def __init__(
        self, *, max_connections: int, max_pending: int, max_per_address: int, max_rooms_per_address: int
    ) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.max_rooms_per_address = max_rooms_per_address
        self.open = 0
        self.pending = 0
        self._addresses: dict[str, AddressLoad] = {}

    def addresses(self) -> int:
        """Client addresses that hold at least one socket."""
        return len(self._addresses)

    def admit(self, address: str, room: str) -> Refusal | None:
        """Count a new socket from ``address`` to ``room``, waiting to join; or say why it is refused
        (then nothing is counted, and ``release`` must not be called)."""
        refusal = self._refusal(address, room)
        if refusal is not None:
            metrics.CONNECTIONS_REFUSED.labels(refusal.reason).inc()
            return refusal
        load = self._addresses.get(address)
        if load is None:
            load = self._addresses[address] = AddressLoad()
        load.add(room)
        self.open += 1
        self.pending += 1
        self._publish()
        return None

    def joined(self) -> None:
        """An admitted socket is in its room: it no longer counts as waiting."""
        self.pending -= 1
        metrics.CONNECTIONS_PENDING.set(self.pending)

    def release(self, address: str, room: str, *, pending: bool) -> None:
        """An admitted socket is gone (``pending``: before it joined its room)."""
        if pending:
            self.pending -= 1
        self.open -= 1
        load = self._addresses[address]
        load.remove(room)
        if not load.connections:
            del self._addresses[address]
        self._publish()

    def _refusal(self, address: str, room: str) -> Refusal | None:
        if self.open >= self.max_connections:
            text = f"this server holds its limit of {self.max_connections} connections; retry later"
            return Refusal(503, "replica_full", text, 5)
        if self.pending >= self.max_pending:
            text = f"{self.max_pending} connections are waiting to join their rooms; retry later"
            return Refusal(503, "pending_full", text, 2)
        load = self._addresses.get(address)
        if load is None:
            return None
        if load.connections >= self.max_per_address:
            text = f"your address holds its limit of {self.max_per_address} connections"
            return Refusal(429, "address_connections", text, 10)
        if load.rooms() >= self.max_rooms_per_address and not load.holds(room):
            text = f"your address holds its limit of {self.max_rooms_per_address} open rooms"
            return Refusal(429, "address_rooms", text, 10)
        return None

    def _publish(self) -> None:
        metrics.CONNECTIONS_ADMITTED.set(self.open)
        metrics.CONNECTIONS_PENDING.set(self.pending)
