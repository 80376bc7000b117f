"""Yjs updates for tests, made with pycrdt the way a client makes them: one update per edit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pycrdt import Doc, Text

from collab_server.crdt.documents import Documents
from persistence.base import Folded


def append_text(doc: Doc[Any], text: str, name: str = "t") -> bytes:
    """Append ``text`` to ``doc``'s Y.Text ``name``; return that edit's update."""
    before = doc.get_state()
    content = doc.get(name, type=Text)
    content.insert(len(content), text)
    return doc.get_update(before)


def typing_updates(count: int, *, client: int = 1, start: int = 0, name: str = "text") -> tuple[Doc[Any], list[bytes]]:
    """A doc and the updates of ``count`` separate appends of ``"i,"`` to its Y.Text ``name``, in order."""
    doc: Doc[Any] = Doc(client_id=client)
    updates = [append_text(doc, f"{i},", name) for i in range(start, start + count)]
    return doc, updates


async def fold_here(room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
    """A ``persistence.base.Fold`` run in the test process (the server folds in its CRDT workers)."""
    return folded_by(Documents(), room, snapshot, updates)


def folded_by(documents: Documents, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
    """``documents.fold``, which must succeed."""
    folded = documents.fold(room, snapshot, updates)
    assert isinstance(folded, Folded), folded
    return folded
