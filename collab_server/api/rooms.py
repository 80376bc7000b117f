"""``/api/rooms``: create, list, read, update and delete rooms, and who is present in one."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from collab_server.access import Access
from collab_server.api import schema
from collab_server.api.auth import authenticate, require_room
from collab_server.api.operations import Call, api, json_response
from collab_server.passwords import hash_password
from collab_server.roles import Role
from collab_server.room_control import RoomControl
from collab_server.settings import Settings
from persistence.room_store import RoomRecord


def new_room_id() -> str:
    """16 URL-safe characters: 96 random bits."""
    return secrets.token_urlsafe(12)


def timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def ws_url(request: Request, room_id: str) -> str:
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}/ws/{quote(room_id, safe='')}"


def room_body(request: Request, room: RoomRecord, role: Role) -> schema.Room:
    return schema.Room(
        id=room.id,
        name=room.name,
        visibility=room.visibility,
        owner=room.owner,
        role=role.value,
        has_password=room.password_hash is not None,
        settings=schema.RoomSettings.model_validate(room.settings),
        ws_url=ws_url(request, room.id),
        created_at=timestamp(room.created_at),
    )


@api.operation("POST", "/api/rooms", "Create a room; the caller becomes its owner",
               status=201, body=schema.CreateRoom, response=schema.Room)
async def create_room(call: Call) -> Response:
    body = call.body_as(schema.CreateRoom)
    principal = await authenticate(call.request)
    access: Access = call.request.state.access
    settings: Settings = call.request.state.settings
    password_hash = None if body.password is None else await hash_password(body.password, settings.bcrypt_cost)
    record = RoomRecord(
        id=new_room_id(),
        name=body.name,
        owner=principal.user,
        visibility=body.visibility,
        password_hash=password_hash,
        settings=(body.settings or schema.RoomSettings()).model_dump(),
    )
    await access.rooms.create(record)
    stored = await access.rooms.get(record.id) or record
    return json_response(room_body(call.request, stored, Role.OWNER), 201)


@api.operation("GET", "/api/rooms", "The caller's rooms (owned or taking part), in pages",
               query=schema.ListRooms, response=schema.RoomList)
async def list_rooms(call: Call) -> Response:
    query = call.query_as(schema.ListRooms)
    principal = await authenticate(call.request)
    access: Access = call.request.state.access
    user = None if principal.anonymous else principal.user
    found = await access.rooms.list_for(user, limit=query.limit + 1, after=query.cursor)
    page = found[: query.limit]
    rooms = []
    for record in page:
        role = Role.OWNER if principal.anonymous or record.owner == principal.user else None
        if role is None:
            participant = await access.rooms.participant(record.id, principal.user)
            role = participant.role if participant is not None else Role.VIEWER
        rooms.append(room_body(call.request, record, role))
    next_cursor = page[-1].id if len(found) > query.limit else None
    return json_response(schema.RoomList(rooms=rooms, next_cursor=next_cursor))


@api.operation("GET", "/api/rooms/{room_id}", "A room, for anyone who may enter it", response=schema.Room)
async def get_room(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.VIEWER, registered=True)
    assert room.record is not None
    return json_response(room_body(call.request, room.record, room.role))


@api.operation("PATCH", "/api/rooms/{room_id}", "Rename a room, change its visibility, password or settings "
               "(owner only); open sockets are re-checked at once", body=schema.UpdateRoom, response=schema.Room)
async def update_room(call: Call) -> Response:
    body = call.body_as(schema.UpdateRoom)
    room = await require_room(call.request, call.path["room_id"], Role.OWNER, registered=True)
    assert room.record is not None
    access: Access = call.request.state.access
    settings: Settings = call.request.state.settings
    record = room.record
    changes: dict[str, object] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.visibility is not None:
        changes["visibility"] = body.visibility
    if body.settings is not None:
        changes["settings"] = body.settings.model_dump()
    password_changed = "password" in body.model_fields_set
    if password_changed:
        changes["password_hash"] = (
            None if body.password is None else await hash_password(body.password, settings.bcrypt_cost)
        )
        changes["password_epoch"] = record.password_epoch + 1
    updated = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    await access.rooms.update(updated)
    if password_changed:
        # Whoever got in with the old password is out; they may join again with the new one.
        await access.rooms.remove_granted_by(record.id, "password")
    control: RoomControl = call.request.state.room_control
    await control.changed(record.id)
    return json_response(room_body(call.request, await access.rooms.get(record.id) or updated, Role.OWNER))


@api.operation("DELETE", "/api/rooms/{room_id}", "Delete a room and its document (owner only); its sockets "
               "are closed with 4404 on every replica", status=204)
async def delete_room(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.OWNER, registered=True)
    access: Access = call.request.state.access
    await access.rooms.delete(room.room_id)
    control: RoomControl = call.request.state.room_control
    await control.deleted(room.room_id)
    return Response(status_code=204)


@api.operation("GET", "/api/rooms/{room_id}/presence", "Who is in the room now, across replicas",
               response=schema.Presence)
async def room_presence(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.VIEWER)
    registry = call.request.state.presence
    entries = await registry.list(room.room_id) if registry is not None else []
    return json_response(
        schema.Presence(
            room=room.room_id,
            entries=[
                schema.PresenceEntry(
                    client_id=entry.client_id, user=entry.user, color=entry.color, replica=entry.replica,
                    last_seen=timestamp(entry.last_seen),
                )
                for entry in entries
            ],
        )
    )
