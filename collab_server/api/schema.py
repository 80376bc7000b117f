"""The REST API's request and response bodies: pydantic models that validate requests and, through
``collab_server.api.openapi``, describe the API. One definition for both, so they cannot drift."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

GrantableRole = Literal["editor", "viewer"]
AnyRole = Literal["owner", "editor", "viewer"]
Name = Annotated[str, StringConstraints(max_length=200)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoomSettings(_Strict):
    """Per-room settings. ``default_role``: what a public room (or its password) grants."""

    default_role: GrantableRole = "editor"


class CreateRoom(_Strict):
    name: Name = ""
    visibility: Literal["public", "private"] = "public"
    password: Password | None = None
    settings: RoomSettings | None = None


class UpdateRoom(_Strict):
    """Only the fields present change; ``"password": null`` clears the password."""

    name: Name | None = None
    visibility: Literal["public", "private"] | None = None
    password: Password | None = None
    settings: RoomSettings | None = None


class Room(_Strict):
    id: str
    name: str
    visibility: Literal["public", "private"]
    owner: str
    role: AnyRole = Field(description="the caller's role in the room")
    has_password: bool
    settings: RoomSettings
    ws_url: str
    created_at: datetime


class RoomList(_Strict):
    rooms: list[Room]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class ListRooms(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown query parameters are ignored, as on the web

    limit: int = Field(50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(max_length=512)] | None = None


class Participant(_Strict):
    user: str
    role: AnyRole
    granted_by: Literal["owner", "password", "invite"]
    joined_at: datetime


class ParticipantList(_Strict):
    participants: list[Participant]


class SetRole(_Strict):
    role: GrantableRole


INVITE_MAX_SECONDS = 30 * 24 * 3600


class CreateInvite(_Strict):
    role: GrantableRole = "editor"
    expires_in: int = Field(7 * 24 * 3600, ge=60, le=INVITE_MAX_SECONDS, description="seconds (at most 30 days)")


class Invite(_Strict):
    token: str
    url: str
    role: GrantableRole
    expires_at: datetime


class JoinWithPassword(_Strict):
    password: Password


class JoinWithInvite(_Strict):
    invite: Token


class JoinRoom(RootModel[JoinWithPassword | JoinWithInvite]):
    """Exactly one of ``{"password": ...}`` and ``{"invite": ...}``."""


class RoomToken(_Strict):
    token: str = Field(description="a room token: pass it as ?token= on the websocket URL")
    role: AnyRole
    expires_at: datetime


class PresenceEntry(_Strict):
    client_id: int
    user: str | None
    color: str | None
    replica: str
    last_seen: datetime


class Presence(_Strict):
    room: str
    entries: list[PresenceEntry]


class Error(BaseModel):
    error: str = Field(description="machine-readable code, e.g. not_found, forbidden, invalid_request")
    detail: Any = Field(None, description="human-readable explanation, or the list of validation problems")
