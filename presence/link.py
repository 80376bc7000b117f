"""A room's link to its broker channel: what this replica knows about the room's other replicas.

One :class:`RoomLink` per loaded room, made by presence.broker_replication when the room starts loading
and dropped when it unloads. The parts of the replication share it: presence.dispatch fills it from
what arrives, presence.repair keeps the digest and the catch-up state, presence.awareness_relay the
owners of remote clients, presence.liveness reads who is there when a replica dies.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom
    from presence.broker import Subscription


@dataclass(eq=False)
class RoomLink:
    """This replica's link to one room's channel (see the module docstring)."""

    name: str
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    subscription: Subscription | None = None
    room: SharedRoom | None = None
    consumer: asyncio.Task[None] | None = None
    # Other replicas heard in this room (since they last said they left it).
    replicas: set[str] = field(default_factory=set)
    # Replicas whose updates were applied here: if one dies, what it had not committed may be only here.
    editors: set[str] = field(default_factory=set)
    # Awareness clients shown here that belong to another replica's peers: client id → replica.
    remote_clients: dict[int, str] = field(default_factory=dict)
    # Bumped by every change to the document; ``changed`` says whether any came since the last digest.
    version: int = 0
    changed: bool = False
    cached_digest: tuple[int, bytes] | None = None  # (version it was computed at, digest)
    # Catch-up on load: replicas whose answer to our load step1 has arrived, and those still awaited.
    answered: set[str] = field(default_factory=set)
    awaiting: set[str] = field(default_factory=set)
    caught_up: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"RoomLink({self.name!r}, replicas={sorted(self.replicas)}, loaded={self.room is not None})"

    def touch(self) -> None:
        """The room's document changed."""
        self.version += 1
        self.changed = True
