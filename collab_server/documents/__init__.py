"""Document logic for the REST API: pure functions over Yjs v1 update bytes (no HTTP, no rooms).

    infer      each root's type, told from the update's own items (structs decodes them, bounded)
    view       the document as JSON by root name; the tldraw layout as {"records", "meta"}
    patch      a JSON patch of tldraw records ({"put", "delete"}) turned into an update
    restore    the one update that makes a document's content equal to an older version's

Everything takes bytes (and plain JSON) and returns bytes or JSON, with no state kept between calls, so the
server can run it in a worker process, away from the sockets, on untrusted input. Errors are
``DocumentError`` with a ``code``; pycrdt's panics never escape.
"""

from collab_server.documents.infer import RootType, infer_types
from collab_server.documents.limits import DEFAULT_LIMITS, DocumentLimits
from collab_server.documents.patch import RecordPatch, parse_patch, patch_update
from collab_server.documents.restore import restore_update
from collab_server.documents.view import DocumentView, document_json

__all__ = [
    "DEFAULT_LIMITS",
    "DocumentLimits",
    "DocumentView",
    "RecordPatch",
    "RootType",
    "document_json",
    "infer_types",
    "parse_patch",
    "patch_update",
    "restore_update",
]
