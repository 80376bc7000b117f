"""Bodies and parameters of the document routes (``api.documents``, ``api.versions``)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from collab_server.documents.infer import parse_type_hints
from collab_server.errors import DocumentError, ProtocolError
from collab_server.protocol import decode_state_vector


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_TYPE = "(?:text|map|array|xml_fragment)"
TYPES_PATTERN = f"^[^,]+:{_TYPE}(?:,[^,]+:{_TYPE})*$"


class DocumentQuery(BaseModel):
    """``GET .../document``: the format, type hints for empty roots, and a state vector to diff against."""

    model_config = ConfigDict(extra="ignore")  # unknown query parameters are ignored, as on the web

    format: Literal["json", "update"] | None = Field(
        None, description="json (default) or update (the Yjs update; also chosen by Accept: application/octet-stream)"
    )
    # Bounded so that a request line stays within what the HTTP server reads (16 KiB), percent-encoded.
    types: Annotated[str, StringConstraints(max_length=256, pattern=TYPES_PATTERN)] | None = Field(
        None, description="types of roots the document cannot tell (all content deleted): name:text,other:map"
    )
    state_vector: Annotated[str, StringConstraints(max_length=2048, pattern="^[A-Za-z0-9+/_=-]*$")] | None = Field(
        None,
        description="base64 Yjs state vector: answer only what the document has beyond it (the update format; "
        "ignored with format=json)",
    )


class DocumentWritten(_Strict):
    state_vector: str = Field(description="base64 Yjs state vector of the room's document after the write")
    changed: bool = Field(description="false when the document already held everything the write carried")


RecordId = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class PatchRecord(BaseModel):
    """A tldraw record: any JSON object with a string ``id`` and ``typeName``."""

    model_config = ConfigDict(extra="allow")

    id: RecordId
    typeName: Annotated[str, StringConstraints(min_length=1)]  # tldraw's field name


class RecordPatch(_Strict):
    """Put (add or replace, by id) and delete records of a tldraw board; an id appears at most once."""

    put: list[PatchRecord] | None = Field(None, description="records to add or replace")
    delete: list[RecordId] | None = Field(None, description="ids of records to delete")


class VersionInfo(_Strict):
    version: int
    created_at: datetime
    size: int = Field(description="bytes of the stored snapshot")
    label: str | None = Field(description="set for named versions, which are never pruned")
    created_by: str | None = Field(description="who created a named version")


class VersionList(_Strict):
    versions: list[VersionInfo] = Field(description="newest first")


class CreateVersion(_Strict):
    label: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Restored(_Strict):
    version: int = Field(description="the version restored")
    undo_version: int | None = Field(description="the version saved just before the restore: restore it to undo")
    state_vector: str
    changed: bool


JSON_OR_UPDATE: dict[str, Any] = {
    "application/json": {"schema": {"type": "object", "description": "the document as JSON (see the README)"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}
UPDATE_OR_PATCH: dict[str, Any] = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description": "a Yjs v1 update"}},
    "application/json": {"schema": RecordPatch.model_json_schema()},
}


def type_hints(raw: str | None) -> dict[str, str]:
    """``name:text,other:map`` as a dict, validated; DocumentError ``invalid_types`` otherwise."""
    hints: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item:
            continue
        name, colon, kind = item.rpartition(":")
        if not colon or not name:
            raise DocumentError("invalid_types", f"{item!r} is not name:type")
        hints[name] = kind
    parse_type_hints(hints)
    return hints


def state_vector_param(raw: str | None) -> bytes | None:
    """A base64 (standard or URL-safe) state vector, checked by our own decoder; None if absent."""
    if raw is None:
        return None
    try:
        vector = base64.b64decode(raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4), validate=True)
        decode_state_vector(vector)
    except (binascii.Error, ValueError, ProtocolError) as exc:
        raise DocumentError("invalid_state_vector", f"state_vector is not a base64 Yjs state vector: {exc}") from exc
    return vector


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
