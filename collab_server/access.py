"""Who may enter a room, and with which role: one decision for websockets and REST alike.

``decide`` is the whole policy, a pure function of the room's record, the caller's participant row and
the principal:

- the anonymous user of a server without authentication owns every room;
- a room token is only good for its own room;
- the owner is owner; a removed participant is refused (removal is a ban until re-added or re-joined);
  an active participant has the role on their row (which the owner may have lowered or raised);
- a room token without a row (``collab-server token --room``) grants its role, unless it came from a
  password that has been changed since;
- anyone else authenticated: the default role of a public room (its settings, default editor); a
  private room refuses them.
- An unregistered room (``COLLAB_ROOMS=open``) behaves as public; in ``registered`` mode it does not
  exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collab_server.errors import AuthError, Forbidden, RoomNotFound
from collab_server.principal import ANONYMOUS, Principal
from collab_server.roles import Role
from collab_server.room_tokens import RoomTokens
from collab_server.tokens import TokenVerifier
from persistence.room_store import Participant, RoomRecord, RoomStore

RoomsMode = Literal["open", "registered"]


def default_role(room: RoomRecord | None) -> Role:
    value = room.settings.get("default_role") if room is not None else None
    return Role.VIEWER if value == Role.VIEWER.value else Role.EDITOR


def decide(
    room_id: str, room: RoomRecord | None, participant: Participant | None, principal: Principal, mode: RoomsMode
) -> Role:
    """The role ``principal`` has in the room; RoomNotFound or Forbidden if they may not enter."""
    if room is None and mode == "registered":
        raise RoomNotFound(f"no room {room_id!r}")
    if principal.anonymous:
        return Role.OWNER
    if principal.room is not None and principal.room != room_id:
        raise Forbidden("this room token is for another room")
    if room is None:
        return principal.role if principal.role is not None else default_role(None)
    if principal.user == room.owner:
        return Role.OWNER
    if participant is not None:
        if not participant.active:
            raise Forbidden("you were removed from this room")
        return participant.role
    if principal.role is not None:
        if principal.via == "password" and principal.password_epoch != room.password_epoch:
            raise Forbidden("the room's password has changed")
        return principal.role
    if room.visibility == "public":
        return default_role(room)
    raise Forbidden("this room is private")


@dataclass(frozen=True, slots=True)
class Admission:
    principal: Principal
    role: Role
    room: RoomRecord | None


class Access:
    """Authentication and the room decision, as the websocket endpoint and the REST API use them.

    ``verifier`` is None when authentication is off: every caller is the anonymous owner of every room.
    """

    def __init__(
        self, rooms: RoomStore, room_tokens: RoomTokens, verifier: TokenVerifier | None, *, mode: RoomsMode
    ) -> None:
        self.rooms = rooms
        self.room_tokens = room_tokens
        self.verifier = verifier
        self.mode: RoomsMode = mode

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    def __repr__(self) -> str:
        return f"Access(enabled={self.enabled}, mode={self.mode!r})"

    async def authenticate(self, token: str | None) -> Principal:
        """The principal ``token`` proves; AuthError if it proves nothing (or is missing)."""
        if self.verifier is None:
            return ANONYMOUS
        if not token:
            raise AuthError("no token")
        return await self.verifier.verify(token)

    async def role(self, room_id: str, principal: Principal) -> Admission:
        """Look the room (and the caller's row in it) up and decide."""
        if principal.anonymous and self.mode == "open":
            return Admission(principal, Role.OWNER, await self.rooms.get(room_id))
        room = await self.rooms.get(room_id)
        participant = None
        if room is not None and not principal.anonymous and principal.user != room.owner:
            participant = await self.rooms.participant(room_id, principal.user)
        return Admission(principal, decide(room_id, room, participant, principal, self.mode), room)

    async def admit(self, room_id: str, token: str | None) -> Admission:
        """A websocket's admission: authenticate first (no I/O), then look the room up."""
        principal = await self.authenticate(token)
        if principal.anonymous and self.mode == "open":
            # Authentication off, rooms open: exactly today's behaviour, and no lookup at all.
            return Admission(principal, Role.OWNER, None)
        return await self.role(room_id, principal)
