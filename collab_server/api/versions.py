"""``/api/rooms/{id}/versions``: a room's history. List the snapshot versions (viewers), save the current
document as a named version (editors), read one (viewers), restore one (owners)."""

from __future__ import annotations

from starlette.responses import Response

from collab_server.api.auth import require_room
from collab_server.api.document_schema import (
    JSON_OR_UPDATE,
    CreateVersion,
    DocumentQuery,
    Restored,
    VersionInfo,
    VersionList,
    b64,
    state_vector_param,
    type_hints,
)
from collab_server.api.documents import read_response, wants_update
from collab_server.api.operations import Call, api, json_response
from collab_server.api.rooms import timestamp
from collab_server.roles import Role
from collab_server.room_documents import RoomDocuments
from persistence.base import Version


def version_body(version: Version) -> VersionInfo:
    return VersionInfo(
        version=version.version,
        created_at=timestamp(version.created_at),
        size=version.size,
        label=version.label,
        created_by=version.created_by,
    )


@api.operation("GET", "/api/rooms/{room_id}/versions", "The room's saved versions, newest first",
               response=VersionList, tags=["documents"])
async def list_versions(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.VIEWER)
    documents: RoomDocuments = call.request.state.documents
    versions = await documents.versions(room.room_id)
    return json_response(VersionList(versions=[version_body(v) for v in versions]))


@api.operation("POST", "/api/rooms/{room_id}/versions", "Save the current document as a named version, never "
               "pruned (editors)", status=201, body=CreateVersion, response=VersionInfo, tags=["documents"])
async def create_version(call: Call) -> Response:
    body = call.body_as(CreateVersion)
    room = await require_room(call.request, call.path["room_id"], Role.EDITOR)
    documents: RoomDocuments = call.request.state.documents
    user = None if room.principal.anonymous else room.principal.user
    version = await documents.save_version(room.room_id, body.label, user)
    return json_response(version_body(version), 201)


@api.operation("GET", "/api/rooms/{room_id}/versions/{version}/document", "One saved version of the document, "
               "in the same formats as the current one", query=DocumentQuery, response_content=JSON_OR_UPDATE,
               tags=["documents"])
async def read_version(call: Call) -> Response:
    query = call.query_as(DocumentQuery)
    room = await require_room(call.request, call.path["room_id"], Role.VIEWER)
    as_update = wants_update(call.request, query)
    hints, vector = type_hints(query.types), state_vector_param(query.state_vector if as_update else None)
    documents: RoomDocuments = call.request.state.documents
    read = await documents.read_version(
        room.room_id, int(call.path["version"]), as_json=not as_update, types=hints, state_vector=vector
    )
    return read_response(read)


@api.operation("POST", "/api/rooms/{room_id}/versions/{version}/restore", "Make the document's content equal "
               "to a saved version, as one change every client sees; the document is saved just before, so the "
               "restore can be undone (owners)", response=Restored, tags=["documents"])
async def restore_version(call: Call) -> Response:
    room = await require_room(call.request, call.path["room_id"], Role.OWNER)
    documents: RoomDocuments = call.request.state.documents
    user = None if room.principal.anonymous else room.principal.user
    restored = await documents.restore(room.room_id, int(call.path["version"]), user)
    return json_response(
        Restored(
            version=restored.version,
            undo_version=restored.undo_version,
            state_vector=b64(restored.state_vector),
            changed=restored.changed,
        )
    )
