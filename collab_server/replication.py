"""The seam between the rooms of this replica and the other replicas.

RoomManager calls these hooks at fixed points of a room's life; the single-replica default does nothing.
A broker-backed implementation subscribes to the room's channel *before* the store is read (so nothing
published during the load is missed), asks the other replicas for what the store does not have yet once
the room is loaded, applies what they send with a ``Replica`` origin (shown to local peers, never stored
or published again), and publishes what local peers change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collab_server.origins import Replica
    from collab_server.protocol import AwarenessEntry


class SharedRoom(Protocol):
    """A loaded room, as the replication may use it: everything it needs, nothing of the room's insides.

    The document may live in another process (the CRDT library is kept away from the process that owns
    the sockets), so everything that reads or changes it is a coroutine.
    """

    @property
    def name(self) -> str: ...

    async def apply_remote(self, update: bytes, origin: Replica) -> None:
        """Apply another replica's update: shown to local peers, never stored or published again."""
        ...

    def apply_remote_awareness(self, update: bytes, message: bytes, origin: Replica) -> None:
        """Apply another replica's awareness update and relay ``message`` to local peers."""
        ...

    def awareness_entries(self) -> list[AwarenessEntry]:
        """Every awareness state the room holds, local and remote."""
        ...

    def has_local_client(self, client_id: int) -> bool:
        """True if one of this replica's peers introduced awareness ``client_id``."""
        ...

    async def state_vector(self) -> bytes: ...

    async def diff(self, state_vector: bytes) -> bytes:
        """The update holding everything the room has beyond ``state_vector`` (and its whole delete set)."""
        ...

    async def delete_set(self) -> bytes:
        """The room's deletions, as an update without structs (``diff(state_vector())``)."""
        ...


class PresenceListing(Protocol):
    """Who is in a room now, on every replica (the presence registry, read by the REST API)."""

    async def list(self, room: str) -> Sequence[Any]: ...


class Replication(Protocol):
    @property
    def presence(self) -> PresenceListing | None:
        """The presence registry, or None where nothing keeps one."""
        ...

    async def room_loading(self, name: str) -> None:
        """Before the store is read for ``name``."""
        ...

    def room_loaded(self, room: SharedRoom) -> None:
        """The room is in memory; no peer has been answered yet."""
        ...

    async def room_ready(self, room: SharedRoom) -> None:
        """Return once the room holds what other replicas know of it (bounded): joiners wait for this,
        so a client is never answered from a document that lacks edits another replica has not stored."""
        ...

    async def room_unloaded(self, name: str) -> None:
        """The room left memory (or failed to load)."""
        ...

    def publish_update(self, room: SharedRoom, update: bytes) -> None:
        """A local peer changed the document (never called for changes from other replicas)."""
        ...

    def publish_awareness(self, room: SharedRoom, message: bytes) -> None:
        """A local peer's awareness changed, or the server removed a closed peer's states."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


class SingleReplica:
    """No other replicas: every hook is a no-op."""

    presence: PresenceListing | None = None

    async def room_loading(self, name: str) -> None:
        pass

    def room_loaded(self, room: SharedRoom) -> None:
        pass

    async def room_ready(self, room: SharedRoom) -> None:
        pass

    async def room_unloaded(self, name: str) -> None:
        pass

    def publish_update(self, room: SharedRoom, update: bytes) -> None:
        pass

    def publish_awareness(self, room: SharedRoom, message: bytes) -> None:
        pass

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return "in-process (single replica)"
