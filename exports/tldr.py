"""A room's document as a board: tldraw records (the tldraw-yjs-example layout) or plain JSON.

The layout, as the tldraw-yjs-example binding writes it:
- ``tl_<room>``: a ``Y.Array`` used as a key/value map by y-utility's ``YKeyValue``: entries
  ``{"key": record id, "val": record}``. A key may appear more than once while concurrent writes settle;
  the right-most entry of a key is its value (that is YKeyValue's rule).
- ``meta``: a ``Y.Map`` whose ``schema`` is the tldraw ``SerializedSchema`` the records were written with.

The ``.tldr`` file is ``{"tldrawFileFormatVersion": 1, "schema": …, "records": [...]}``: what tldraw's
"Save a copy" writes and "Open" reads. A room that is not a tldraw board is exported as its document JSON,
the text ``GET /api/rooms/{id}/document?format=json`` answers (exports.document_view, in the decode child).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, Doc, Map

TLDRAW_FILE_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Board:
    """What a renderer or the JSON export needs of a room. ``records`` is empty for a non-tldraw room, whose
    ``document`` is its JSON view (text, as the document REST endpoint sends it)."""

    room: str
    records: list[dict[str, Any]] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    document: str | None = None

    @property
    def is_tldraw(self) -> bool:
        return self.schema is not None or bool(self.records)

    def to_json(self) -> dict[str, Any]:
        return {"room": self.room, "records": self.records, "schema": self.schema, "document": self.document}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Board:
        return cls(data["room"], data["records"], data["schema"], data["document"])


def records_key(room: str) -> str:
    return f"tl_{room}"


def board_from_doc(doc: Doc[Any], room: str) -> Board:
    """Read a room's Doc. Only roots that exist are read: asking pycrdt for a root by the wrong type
    silently gives an empty one, so the type is taken from the layout, never guessed."""
    roots = set(doc.keys())
    key = records_key(room)
    if key not in roots:
        return Board(room)
    latest: dict[str, dict[str, Any]] = {}
    for entry in doc.get(key, type=Array).to_py() or []:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("val"), dict):
            latest.pop(entry["key"], None)  # re-insert so the order is that of the right-most entries
            latest[entry["key"]] = _integral(entry["val"])
    schema = None
    if "meta" in roots:
        found = doc.get("meta", type=Map).to_py() or {}
        if isinstance(found.get("schema"), dict):
            schema = _integral(found["schema"])
    return Board(room, list(latest.values()), schema)


def tldr_file(board: Board) -> bytes:
    """The ``.tldr`` JSON of a tldraw board; for another document, its JSON view."""
    if not board.is_tldraw:
        if board.document is None:
            raise ValueError(f"room {board.room!r}: the document view was not built (exports.decode builds it)")
        return board.document.encode()
    body = {"tldrawFileFormatVersion": TLDRAW_FILE_FORMAT_VERSION, "schema": board.schema, "records": board.records}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _integral(value: Any) -> Any:
    # Yjs keeps JSON numbers as float64 and pycrdt hands every one back as a float; 3.0 goes back to 3
    # so the file reads like the one tldraw writes (its validators accept either).
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value
