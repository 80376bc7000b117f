"""Where a change to a room came from: its *origin*, which decides where the change goes next.

- a local ``Peer`` (a socket on this replica): shown to the other local peers, stored, published to
  the other replicas;
- a ``Replica`` (another server process, through the broker): shown to local peers only, never stored
  or published again (the replica it came from did both);
- ``LOCAL`` (the server itself: REST document writes, restores): stored and published like a peer's.

The origin travels explicitly with every change (``Room.apply(update, origin)``); nothing stashes it
in a field for a callback to find.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from collab_server.peer import Peer


class Replica:
    """Origin of a change that arrived from another replica through the broker."""

    __slots__ = ("replica_id",)

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id

    def __repr__(self) -> str:
        return f"Replica({self.replica_id!r})"


class _Local:
    __slots__ = ()

    def __repr__(self) -> str:
        return "LOCAL"


LOCAL: Final = _Local()
"""Origin of a change made by the server itself (REST document writes, restores)."""

Origin: TypeAlias = "Peer | Replica | _Local"


def is_local(origin: Origin) -> bool:
    """True for changes this replica must store and publish (a local peer's or the server's own)."""
    return not isinstance(origin, Replica)
