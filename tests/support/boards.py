"""tldraw boards as a Yjs document in the tldraw-yjs-example layout, built in Python for tests."""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map

SCHEMA = {"schemaVersion": 2, "sequences": {"com.tldraw.store": 4, "com.tldraw.shape.geo": 10}}


def geo(id_: str, *, x: float = 0, y: float = 0, color: str = "red", text: str = "") -> dict[str, Any]:
    return {"id": id_, "typeName": "shape", "type": "geo", "x": x, "y": y, "parentId": "page:page",
            "props": {"color": color, "text": text}}


def base_records() -> list[dict[str, Any]]:
    return [
        {"id": "document:document", "typeName": "document", "gridSize": 10, "name": "", "meta": {}},
        {"id": "page:page", "typeName": "page", "name": "Page 1", "index": "a1", "meta": {}},
    ]


def board_update(room: str, records: list[dict[str, Any]], schema: dict[str, Any] | None = SCHEMA,
                 *, rewrites: list[dict[str, Any]] = ()) -> bytes:  # type: ignore[assignment]
    """One update holding ``records`` as YKeyValue entries of ``tl_<room>`` (and ``rewrites`` appended after
    them, as a concurrent set leaves a key twice) and ``schema`` in ``meta``."""
    doc: Doc[Any] = Doc()
    entries = doc.get(f"tl_{room}", type=Array)
    meta = doc.get("meta", type=Map)
    with doc.transaction():
        for record in [*records, *rewrites]:
            entries.append({"key": record["id"], "val": record})
        if schema is not None:
            meta["schema"] = schema
    return doc.get_update()
