"""Who is authenticated, and with what: a user token, a room token, or nothing (auth off)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collab_server.roles import Role

Via = Literal["password", "invite", "issued"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``user`` is the token's ``sub``.

    A *room token* (``room`` set) authenticates ``user`` for that one room only and grants ``role``,
    obtained ``via`` a password, an invite, or issued by an operator (``collab-server token --room``).
    ``anonymous`` is the single user of a server running without authentication: owner of every room.
    ``expires_at`` is the token's ``exp`` (seconds since the epoch): a socket it opened is closed then.
    """

    user: str
    name: str | None = None
    room: str | None = None
    role: Role | None = None
    via: Via | None = None
    password_epoch: int = 0
    anonymous: bool = False
    expires_at: float | None = None

    def __repr__(self) -> str:
        scope = f", room={self.room!r}, role={self.role}" if self.room is not None else ""
        return f"Principal(user={self.user!r}{scope})"


ANONYMOUS = Principal("anonymous", anonymous=True)
