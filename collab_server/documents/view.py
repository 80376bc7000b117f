"""A document as JSON: by root name, or as tldraw records when it has the tldraw layout.

    plain   {"<root>": value, ...}    text -> string, map -> object, array -> array, xml_fragment -> XML
                                      string, a root whose type cannot be told (and is not hinted) -> null
    tldraw  {"records": {id: record}, "meta": {...}[, "roots": {other roots, as above}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from collab_server.documents.infer import RootType
from collab_server.documents.limits import DEFAULT_LIMITS, DocumentLimits
from collab_server.documents.loading import Loaded, call_pycrdt, load
from collab_server.documents.tldraw import META_ROOT, find_layout
from collab_server.documents.values import empty_json, get_root, to_json


@dataclass(frozen=True, slots=True)
class DocumentView:
    """The JSON form of a document, which layout it was read as, and each root's type."""

    layout: Literal["roots", "tldraw"]
    types: dict[str, RootType | None]
    content: dict[str, Any]


def document_json(
    update: bytes,
    *,
    types: Mapping[str, str] | None = None,
    room: str | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> DocumentView:
    """Read ``update`` (a full-state Yjs v1 update) as JSON.

    ``types`` hints the type of empty roots (see ``infer_types``); ``room`` picks ``tl_<room>`` as the
    records array when a document has several ``tl_*`` roots.
    """
    loaded = load(update, limits, types=types)
    # Reading walks pycrdt values: a panic there is translated like one while loading.
    return call_pycrdt("document cannot be read", lambda: _read(loaded, room, limits))


def _read(loaded: Loaded, room: str | None, limits: DocumentLimits) -> DocumentView:
    doc, root_types = loaded.doc, loaded.types
    layout = find_layout(doc, root_types, room)
    skip = layout.records_root if layout is not None else None
    roots = {
        name: to_json(get_root(doc, name, kind), limits) if kind is not None else empty_json(None)
        for name, kind in sorted(root_types.items())
        if name != skip
    }
    if layout is None:
        return DocumentView("roots", root_types, roots)
    content: dict[str, Any] = {
        "records": {key: to_json(val, limits) for key, val in sorted(layout.records().items())},
        "meta": {},
    }
    if root_types.get(META_ROOT) in (RootType.MAP, None) and META_ROOT in roots:
        content["meta"] = roots.pop(META_ROOT) or {}
    if roots:
        content["roots"] = roots
    return DocumentView("tldraw", root_types, content)
