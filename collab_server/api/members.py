"""Who takes part in a room: participants (owner manages roles), invites, and joining with a password or
an invite, which answers with a room token."""

from __future__ import annotations

import secrets
from typing import Literal
from urllib.parse import quote

from starlette.responses import Response

from collab_server.access import Access, default_role
from collab_server.api import schema
from collab_server.api.auth import bearer_token, require_room
from collab_server.api.operations import Call, api, json_response
from collab_server.api.ratelimit import AttemptLimiter
from collab_server.api.rooms import timestamp
from collab_server.errors import AuthError, Conflict, Forbidden, RoomNotFound
from collab_server.passwords import check_password
from collab_server.roles import Role
from collab_server.room_control import RoomControl
from collab_server.security import security_event
from persistence.room_store import Participant


def participant_body(row: Participant) -> schema.Participant:
    return schema.Participant(user=row.user, role=row.role.value, granted_by=row.granted_by,
                              joined_at=timestamp(row.joined_at))


@api.operation("GET", "/api/rooms/{room_id}/participants", "The room's participants (owner only)",
               response=schema.ParticipantList)
async def list_participants(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.OWNER, registered=True)
    access: Access = call.request.state.access
    rows = await access.rooms.participants(room.room_id)
    return json_response(schema.ParticipantList(participants=[participant_body(row) for row in rows]))


@api.operation("PUT", "/api/rooms/{room_id}/participants/{user}", "Give a user a role in the room (owner "
               "only); their open sockets follow at once", body=schema.SetRole, response=schema.Participant)
async def set_participant(call: Call) -> Response:
    body = call.body_as(schema.SetRole)
    room = await require_room(call.request, call.path["room_id"], Role.OWNER, registered=True)
    assert room.record is not None
    user = call.path["user"]
    if user == room.record.owner:
        raise Conflict("the owner's role cannot be changed")
    access: Access = call.request.state.access
    row = await access.rooms.set_participant(room.room_id, user, Role(body.role), "owner")
    control: RoomControl = call.request.state.room_control
    await control.changed(room.room_id)
    return json_response(participant_body(row))


@api.operation("DELETE", "/api/rooms/{room_id}/participants/{user}", "Remove a user from the room (owner "
               "only); their open sockets are closed with 4403", status=204)
async def remove_participant(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.OWNER, registered=True)
    assert room.record is not None
    user = call.path["user"]
    if user == room.record.owner:
        raise Conflict("the owner cannot be removed")
    access: Access = call.request.state.access
    if not await access.rooms.remove_participant(room.room_id, user):
        raise RoomNotFound(f"{user!r} is not a participant")
    control: RoomControl = call.request.state.room_control
    await control.changed(room.room_id)
    return Response(status_code=204)


@api.operation("POST", "/api/rooms/{room_id}/invites", "A signed invite granting a role until it expires "
               "(owner only)", status=201, body=schema.CreateInvite, response=schema.Invite)
async def create_invite(call: Call) -> Response:
    body = call.body_as(schema.CreateInvite)
    room = await require_room(call.request, call.path["room_id"], Role.OWNER, registered=True)
    access: Access = call.request.state.access
    token, expires = access.room_tokens.mint_invite(room=room.room_id, role=Role(body.role), expires_in=body.expires_in)
    template = call.request.state.settings.invite_url
    if template:  # the app's own page, which exchanges the invite (POST .../join) for the user
        url = template.replace("{room}", quote(room.room_id, safe="")).replace("{invite}", token)
    else:
        base = str(call.request.base_url).rstrip("/")
        url = f"{base}/api/rooms/{quote(room.room_id, safe='')}/join?invite={token}"
    return json_response(schema.Invite(token=token, url=url, role=body.role, expires_at=timestamp(expires)), 201)


@api.operation("POST", "/api/rooms/{room_id}/join", "Exchange the room's password or an invite for a room "
               "token; the caller becomes a participant", body=schema.JoinRoom, response=schema.RoomToken)
async def join_room(call: Call) -> Response:
    body = call.body_as(schema.JoinRoom).root
    request = call.request
    room_id = call.path["room_id"]
    limiter: AttemptLimiter = request.state.join_limiter
    limiter.hit(room_id, request.client.host if request.client else "")
    access: Access = request.state.access
    # A caller with a token joins as themselves; one without joins as a new guest.
    token = bearer_token(request)
    principal = await access.authenticate(token) if token or not access.enabled else None
    user = principal.user if principal is not None else "guest:" + secrets.token_urlsafe(9)
    name = principal.name if principal is not None else None
    record = await access.rooms.get(room_id)
    if record is None:
        raise RoomNotFound(f"no room {room_id!r}")
    via: Literal["password", "invite"]
    if isinstance(body, schema.JoinWithPassword):
        if record.password_hash is None or not await check_password(body.password, record.password_hash):
            raise Forbidden("wrong password")
        role, via = default_role(record), "password"
    else:
        try:
            role, via = access.room_tokens.verify_invite(body.invite, room_id), "invite"
        except AuthError as exc:
            raise Forbidden(f"invalid invite: {exc}") from None
    existing = await access.rooms.participant(room_id, user)
    if user == record.owner:
        role = Role.OWNER
    elif existing is not None and existing.active and existing.role.at_least(role):
        role = existing.role  # joining never lowers anyone
    else:
        await access.rooms.set_participant(room_id, user, role, via)
    security_event("joined", f"joined by {via}", room=room_id, client=request.client.host if request.client else None)
    room_token, expires = access.room_tokens.mint(
        user=user, room=room_id, role=role, via=via, password_epoch=record.password_epoch, name=name
    )
    return json_response(schema.RoomToken(token=room_token, role=role.value, expires_at=timestamp(expires)))


