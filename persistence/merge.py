"""Merging stored updates into one full-state update.

pycrdt's ``merge_updates`` grows badly on long lists, so long logs are applied into a Doc and encoded;
that also validates every stored update, which is how corrupt rows are found before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Doc

from collab_server.errors import CorruptDocument


def build_doc(room: str, snapshot: bytes | None, updates: Iterable[bytes]) -> Doc[Any]:
    """A Doc holding the snapshot and every update; CorruptDocument names the first bad part."""
    doc: Doc[Any] = Doc()
    if snapshot is not None:
        try:
            doc.apply_update(snapshot)
        except Exception as exc:  # pycrdt raises ValueError, but a Rust panic surfaces differently
            raise CorruptDocument(f"room {room!r}: snapshot cannot be decoded ({exc})") from exc
    for index, update in enumerate(updates):
        try:
            doc.apply_update(update)
        except Exception as exc:
            raise CorruptDocument(f"room {room!r}: logged update #{index} cannot be decoded ({exc})") from exc
    return doc
