"""A room that is not a tldraw board, exported as the document REST endpoint shows it.

``GET /api/rooms/{id}/document?format=json`` answers with a ``DocumentCall(Action.VIEW)`` run over the room's
full state (``collab_server.crdt.document_calls``, which calls ``collab_server.documents``). The export goes
through that same seam, with the same framing and limits, so the file is byte for byte the endpoint's
answer for the same content. It runs in the decode child (exports.decode), never in the server.
"""

from __future__ import annotations

from collab_server.crdt.document_calls import Action, DocumentCall, decode_answer, encode_call, run
from collab_server.documents import DocumentLimits


def document_json(full_state: bytes, room: str, limits: DocumentLimits) -> str:
    """The document's JSON view as the REST endpoint sends it; DocumentError (with its code) if refused."""
    call = DocumentCall(Action.VIEW, full_state, room=room, limits=limits)
    return decode_answer(run(encode_call(call))).content.decode()
