"""``/api/rooms/{id}/document``: read a room's document (JSON or the Yjs update) and write to it (a Yjs
update, or a JSON patch of tldraw records). Viewers read, editors write."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from collab_server.api.auth import require_room
from collab_server.api.document_schema import (
    JSON_OR_UPDATE,
    UPDATE_OR_PATCH,
    DocumentQuery,
    DocumentWritten,
    b64,
    state_vector_param,
    type_hints,
)
from collab_server.api.operations import Call, api, json_response
from collab_server.errors import RequestError
from collab_server.roles import Role
from collab_server.room_documents import Read, RoomDocuments, Written

DOCUMENT_PATH = re.compile(r"/api/rooms/[^/]+/document")
"""The one path whose bodies may be as large as a document (``COLLAB_DOCUMENT_MAX_BYTES``)."""

BINARY = "application/octet-stream"
STATE_VECTOR_HEADER = "X-Collab-State-Vector"


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"
    status = 415


def wants_update(request: Request, query: DocumentQuery) -> bool:
    """The binary update (``format=update``, ``Accept: application/octet-stream``, or a state vector to
    diff against) rather than JSON."""
    if query.format is not None:
        return query.format == "update"
    accept = request.headers.get("accept", "")
    return query.state_vector is not None or BINARY in accept


def read_response(read: Read) -> Response:
    headers = {STATE_VECTOR_HEADER: b64(read.state_vector)} if read.state_vector else {}
    if read.view is not None:
        headers["X-Collab-Layout"] = read.view.layout
        return Response(read.view.content, media_type="application/json", headers=headers)
    assert read.update is not None
    return Response(read.update, media_type=BINARY, headers=headers)


def written_response(written: Written) -> Response:
    return json_response(DocumentWritten(state_vector=b64(written.state_vector), changed=written.changed))


@api.operation("GET", "/api/rooms/{room_id}/document", "The room's document: JSON by root name (a tldraw board "
               "as its records), or the Yjs update with Accept: application/octet-stream or format=update",
               query=DocumentQuery, response_content=JSON_OR_UPDATE, tags=["documents"])
async def read_document(call: Call) -> Response:
    query = call.query_as(DocumentQuery)
    room = await require_room(call.request, call.path["room_id"], Role.VIEWER)
    as_update = wants_update(call.request, query)
    hints, vector = type_hints(query.types), state_vector_param(query.state_vector if as_update else None)
    documents: RoomDocuments = call.request.state.documents
    read = await documents.read(room.room_id, as_json=not as_update, types=hints, state_vector=vector)
    return read_response(read)


@api.operation("POST", "/api/rooms/{room_id}/document", "Apply a Yjs update (application/octet-stream) or a JSON "
               "patch of tldraw records ({put, delete}) as one change every client sees (editors)",
               request_content=UPDATE_OR_PATCH, response=DocumentWritten, errors=(415,), tags=["documents"])
async def write_document(call: Call) -> Response:
    request = call.request
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (BINARY, "application/json"):
        raise UnsupportedMediaType(f"send {BINARY} (a Yjs update) or application/json (a record patch)")
    room = await require_room(request, call.path["room_id"], Role.EDITOR)
    body = await request.body()
    documents: RoomDocuments = request.state.documents
    if media == BINARY:
        return written_response(await documents.write_update(room.room_id, body))
    return written_response(await documents.write_patch(room.room_id, body))
