"""What a fresh client is sent, kept while its room's document does not change.

A fresh Yjs provider (a page opened, a board loaded) sends sync step1 with an empty state vector and is
answered with the whole document. When a class of thirty opens the same board, or a replica takes over
ten thousand reconnecting clients, every one of those answers is the same bytes, and each costs the
room's CRDT worker an encoding of the whole document and a round trip. The worker pool keeps the last
such answer per room here and hands it out again until an op that may change the document is queued for
the room: from then on the old answer is never used, and the next fresh client's comes from the worker.

Only answers are kept whose room had no change queued between the request and the answer (ops of one
room run in the order they were queued, so such an answer is the document as of that moment). A room's
entry goes when the room is unloaded; every entry goes when a worker is recovered. The bytes kept are
bounded: an answer larger than a quarter of ``max_bytes`` is not kept, and the least recently used go
first.
"""

from __future__ import annotations

import itertools


class FreshSyncCache:
    """Per room, the whole document as of its last change, and which change that was."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(max_bytes, 0)
        self._changes = itertools.count(1)  # never repeats, so an unloaded room's old mark never matches
        self._marks: dict[str, int] = {}  # room -> the change last queued for it
        self._kept: dict[str, tuple[int, bytes]] = {}  # room -> (the mark it was answered at, the bytes)
        self._bytes = 0

    def __repr__(self) -> str:
        return f"FreshSyncCache(rooms={len(self._kept)}, bytes={self._bytes}, max_bytes={self.max_bytes})"

    def mark(self, room: str) -> int | None:
        """What an answer requested now must be stored with (``store``)."""
        return self._marks.get(room)

    def get(self, room: str) -> bytes | None:
        kept = self._kept.get(room)
        if kept is None or kept[0] != self._marks.get(room):
            return None
        del self._kept[room]  # to the end of the order: used recently
        self._kept[room] = kept
        return kept[1]

    def store(self, room: str, mark: int | None, document: bytes) -> None:
        """Keep ``document``, answered for a request made at ``mark``, unless the room changed since."""
        if mark is None or mark != self._marks.get(room) or len(document) > self.max_bytes // 4:
            return
        self._drop(room)
        while self._kept and self._bytes + len(document) > self.max_bytes:
            self._drop(next(iter(self._kept)))
        self._kept[room] = (mark, document)
        self._bytes += len(document)

    def changed(self, room: str) -> None:
        """An op that may change ``room``'s document was queued: what is kept for it is stale."""
        self._marks[room] = next(self._changes)
        self._drop(room)

    def forget(self, room: str) -> None:
        """The room was unloaded."""
        self._marks.pop(room, None)
        self._drop(room)

    def clear(self) -> None:
        """Drop every answer (a worker was recovered: its rooms were rebuilt, perhaps without a row)."""
        for room in list(self._kept):
            self._drop(room)
        for room in self._marks:
            self._marks[room] = next(self._changes)

    def _drop(self, room: str) -> None:
        kept = self._kept.pop(room, None)
        if kept is not None:
            self._bytes -= len(kept[1])
