"""Who is calling, and may they do this to this room: what every API module uses to authorize.

    access = await require_room(request, room_id, Role.EDITOR)

raises the server's errors (AuthError → 401, Forbidden → 403, RoomNotFound → 404), which the API's one
error mapping turns into responses. A private room the caller may not enter answers 404, not 403: its
existence is not disclosed.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from collab_server.access import Access
from collab_server.errors import AuthError, Forbidden, RoomNotFound
from collab_server.principal import Principal
from collab_server.roles import Role
from persistence.room_store import RoomRecord


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """The caller's standing in one room. ``record`` is None for an unregistered room (open mode)."""

    room_id: str
    record: RoomRecord | None
    principal: Principal
    role: Role


def bearer_token(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def authenticate(request: HTTPConnection) -> Principal:
    """The caller; AuthError without a valid token (unless authentication is off)."""
    access: Access = request.state.access
    return await access.authenticate(bearer_token(request))


async def require_room(
    request: HTTPConnection, room_id: str, need: Role, *, registered: bool = False
) -> RoomAccess:
    """The caller's access to ``room_id`` if it is at least ``need``.

    ``registered``: the operation concerns the room's registration (rename, delete, members), so an
    unregistered room (open mode) does not exist for it.
    """
    access: Access = request.state.access
    principal = await authenticate(request)
    try:
        admission = await access.role(room_id, principal)
    except Forbidden as exc:
        room = await access.rooms.get(room_id)
        if room is None or room.visibility == "private":
            raise RoomNotFound(f"no room {room_id!r}") from exc
        raise
    if registered and admission.room is None:
        raise RoomNotFound(f"no room {room_id!r}")
    if not admission.role.at_least(need):
        raise Forbidden(f"this needs the {need} role; you are {admission.role}")
    return RoomAccess(room_id, admission.room, principal, admission.role)
