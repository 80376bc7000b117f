"""What the SQL RoomStore backends share: turning rows into records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from collab_server.roles import Role
from persistence.room_store import GrantedBy, Participant, RoomRecord, Visibility

ROOM_COLUMNS = "id, name, owner, visibility, password_hash, settings, created_at, last_active_at, password_epoch"
PARTICIPANT_COLUMNS = "room_id, principal, role, granted_by, joined_at, left_at"


def room_from_row(row: Mapping[str, Any] | tuple[Any, ...]) -> RoomRecord:
    values = tuple(row.values()) if isinstance(row, Mapping) else tuple(row)
    room_id, name, owner, visibility, password_hash, settings, created, active, epoch = values
    return RoomRecord(
        id=room_id,
        name=name,
        owner=owner,
        visibility=cast(Visibility, visibility),
        password_hash=password_hash,
        settings=json.loads(settings) if isinstance(settings, str) else dict(settings or {}),
        created_at=float(created),
        last_active_at=float(active),
        password_epoch=int(epoch),
    )


def participant_from_row(row: Mapping[str, Any] | tuple[Any, ...]) -> Participant:
    values = tuple(row.values()) if isinstance(row, Mapping) else tuple(row)
    room_id, user, role, granted_by, joined, left = values
    return Participant(
        room_id, user, Role(role), cast(GrantedBy, granted_by), float(joined), None if left is None else float(left)
    )


def settings_json(room: RoomRecord) -> str:
    return json.dumps(room.settings, separators=(",", ":"), sort_keys=True)
