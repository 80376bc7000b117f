"""The RoomStore seam: registered rooms (owner, visibility, password hash, settings) and participants.

A room is *registered* when it was created over REST; in ``open`` mode unregistered rooms exist too
(they are just documents). Participants are never deleted, only marked ``left_at``: a removed
participant stays known as removed, which is what refuses a room token minted before the removal.

Errors: StoreUnavailable when the backend cannot be reached; Conflict when ``create`` meets an id that
exists already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from collab_server.roles import Role

Visibility = Literal["public", "private"]
GrantedBy = Literal["owner", "password", "invite"]


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """One registered room. ``password_epoch`` grows each time the password changes or is cleared:
    room tokens granted by an older password carry an older epoch and are no longer accepted."""

    id: str
    name: str
    owner: str
    visibility: Visibility = "public"
    password_hash: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    last_active_at: float = 0.0
    password_epoch: int = 0


@dataclass(frozen=True, slots=True)
class Participant:
    """A user's role in a room and how they got it; ``left_at`` is set once they were removed."""

    room_id: str
    user: str
    role: Role
    granted_by: GrantedBy
    joined_at: float
    left_at: float | None = None

    @property
    def active(self) -> bool:
        return self.left_at is None


class RoomStore(Protocol):
    """Registered rooms and their participants (see the module docstring)."""

    async def create(self, room: RoomRecord) -> None:
        """Store a new room and its owner as a participant (role owner); Conflict if the id exists."""
        ...

    async def get(self, room_id: str) -> RoomRecord | None: ...

    async def update(self, room: RoomRecord) -> None:
        """Replace the stored fields of ``room`` (matched by id) and touch ``last_active_at``."""
        ...

    async def delete(self, room_id: str) -> bool:
        """Delete the room and its participants; False if there was no such room."""
        ...

    async def list_for(self, user: str | None, *, limit: int, after: str | None = None) -> list[RoomRecord]:
        """Rooms ``user`` owns or takes part in (every room when ``user`` is None), by id, after ``after``."""
        ...

    async def participant(self, room_id: str, user: str) -> Participant | None:
        """``user``'s row in the room, removed or not; None if they never took part."""
        ...

    async def participants(self, room_id: str) -> list[Participant]:
        """The room's active participants, by user."""
        ...

    async def set_participant(self, room_id: str, user: str, role: Role, granted_by: GrantedBy) -> Participant:
        """Add ``user`` with ``role``, or change their role (a removed user is added again)."""
        ...

    async def remove_participant(self, room_id: str, user: str) -> bool:
        """Mark ``user`` as removed; False if they were not an active participant."""
        ...

    async def remove_granted_by(self, room_id: str, granted_by: GrantedBy) -> list[str]:
        """Mark every active participant who got in by ``granted_by`` as removed; returns their users."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...
