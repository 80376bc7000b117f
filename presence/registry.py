"""The presence registry: who is in which room right now, across every replica.

Each replica writes the entries of its *own* peers' awareness clients (client id → user name and colour
from the awareness state, the replica, last seen) and refreshes them while they are connected; other
replicas only read. An entry disappears when its client's awareness is removed (the socket closed, the
client left), when it was not refreshed for ``ttl`` seconds, or when its replica stops heartbeating:
``list`` never returns an entry of a replica whose heartbeat expired, and the surviving replicas
``prune`` such entries for good. This is what the REST presence listing reads.

Backends: in-process (``presence.local.LocalRegistry``) and Redis (``presence.redis_registry.RedisRegistry``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from collab_server.protocol import AwarenessEntry


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One awareness client in one room. ``last_seen`` is Unix time (seconds)."""

    client_id: int
    user: str | None
    color: str | None
    replica: str
    last_seen: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> PresenceEntry:
        data = json.loads(text)
        return cls(
            client_id=int(data["client_id"]),
            user=data.get("user"),
            color=data.get("color"),
            replica=str(data["replica"]),
            last_seen=float(data["last_seen"]),
        )


def _text(value: Any) -> str | None:
    # Awareness states are whatever the app put there: keep short strings, refuse anything else.
    if isinstance(value, str):
        return value[:200]
    return None


def describe_state(state: Any) -> tuple[str | None, str | None]:
    """(user name, colour) from an awareness state, in the shapes apps commonly use:
    ``{"user": {"name", "color"}}`` (y-websocket demos, tiptap, BlockNote), ``{"user": "name"}``,
    ``{"name", "color"}``, and tldraw's ``{"presence": {"userName", "color"}}``."""
    if not isinstance(state, dict):
        return None, None
    user = state.get("user")
    if isinstance(user, dict):
        return _text(user.get("name")), _text(user.get("color") or user.get("colour"))
    if isinstance(user, str):
        return _text(user), _text(state.get("color"))
    presence = state.get("presence")
    if isinstance(presence, dict):
        return _text(presence.get("userName") or presence.get("name")), _text(presence.get("color"))
    return _text(state.get("name")), _text(state.get("color") or state.get("colour"))


def entry_for(awareness: AwarenessEntry, replica: str, now: float) -> PresenceEntry:
    """The presence entry of a live awareness state (its JSON was validated by the protocol)."""
    try:
        state = json.loads(awareness.state)
    except ValueError:
        state = None
    user, color = describe_state(state)
    return PresenceEntry(awareness.client_id, user, color, replica, now)


class PresenceRegistry(Protocol):
    """Presence of every room, shared by the replicas (see the module docstring).

    Errors: BrokerError when the backend cannot be reached.
    """

    ttl: float
    """Seconds an entry stays listed without being written again."""

    async def write(self, room: str, upserts: Sequence[PresenceEntry], removals: Collection[int]) -> None:
        """Set ``upserts`` and delete the entries of ``removals`` (client ids) in ``room``; refreshes
        the room's expiry."""
        ...

    async def list(self, room: str) -> list[PresenceEntry]:
        """The room's live entries: refreshed within ``ttl`` and of a replica that is heartbeating."""
        ...

    async def prune(self, room: str, replicas: Collection[str]) -> int:
        """Delete the room's entries written by ``replicas`` (presumed dead); returns how many."""
        ...

    async def heartbeat(self, replica: str, ttl: float) -> bool:
        """``replica`` is alive for the next ``ttl`` seconds. False if its previous heartbeat had already
        expired or vanished (e.g. Redis restarted empty): the caller rewrites its entries."""
        ...

    async def alive(self, replicas: Collection[str]) -> set[str]:
        """Those of ``replicas`` whose heartbeat has not expired."""
        ...

    async def leave(self, replica: str) -> None:
        """``replica`` shuts down cleanly: its heartbeat ends now."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...
