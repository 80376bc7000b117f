"""What a fresh client is sent, kept while its room's document does not change.

A fresh Yjs provider (a page opened, a board loaded) sends sync step1 with an empty state vector and is
answered with the whole document. When a class of thirty opens the same board, or a replica takes over
ten thousand reconnecting clients, every one of those answers is the same bytes, and each costs the
room's CRDT worker an encoding of the whole document and a round trip. The worker pool keeps the last
such answer per room here and hands it out again until an op that may change the document is queued for
the room: from then on the old answer is never used, and the next fresh client's comes from the worker.

Only answers are kept whose room had no change queued between the request and the answer (ops of one
room run in the order they were queued, so such an answer is the document as of that moment). To know
that, a request takes a ticket (``ask``) that a change queued meanwhile voids, and hands it back with the
answer (``answered``). Tickets are held only while a request is out, so the cache holds nothing for a
room that has neither a request out nor an answer kept: a room whose load failed, or an update that came
for a room already gone, leaves no trace. A room's answer goes when the room is unloaded; every answer
goes when a worker is recovered. The bytes kept are bounded: an answer larger than a quarter of
``max_bytes`` is not kept, and the least recently used go first.
"""

from __future__ import annotations

import itertools


class FreshSyncCache:
    """Per room, the whole document as of its last change, and the requests out for it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(max_bytes, 0)
        self._tickets = itertools.count(1)  # never repeats, so a voided ticket never matches again
        # room -> [the ticket a request asked now gets, how many requests are out]
        self._asking: dict[str, list[int]] = {}
        self._kept: dict[str, bytes] = {}  # room -> its whole document, in least recently used order
        self._bytes = 0

    def __repr__(self) -> str:
        return f"FreshSyncCache(rooms={len(self._kept)}, bytes={self._bytes}, max_bytes={self.max_bytes})"

    def __len__(self) -> int:
        """How many rooms the cache holds anything for (a kept answer or a request out)."""
        return len(self._kept.keys() | self._asking.keys())

    def get(self, room: str) -> bytes | None:
        kept = self._kept.pop(room, None)
        if kept is not None:
            self._kept[room] = kept  # to the end of the order: used recently
        return kept

    def ask(self, room: str) -> int:
        """A request for ``room``'s whole document goes out: the ticket to hand back with its answer."""
        asking = self._asking.setdefault(room, [next(self._tickets), 0])
        asking[1] += 1
        return asking[0]

    def answered(self, room: str, ticket: int, document: bytes | None) -> None:
        """The request that took ``ticket`` came back with ``document`` (None: it failed). The document
        is kept unless a change was queued for the room after the ticket was taken."""
        asking = self._asking[room]
        current = asking[0] == ticket
        asking[1] -= 1
        if not asking[1]:
            del self._asking[room]
        if document is None or not current or len(document) > self.max_bytes // 4:
            return
        self._drop(room)
        while self._kept and self._bytes + len(document) > self.max_bytes:
            self._drop(next(iter(self._kept)))
        self._kept[room] = document
        self._bytes += len(document)

    def changed(self, room: str) -> None:
        """An op that may change ``room``'s document (or unload it) was queued: what is kept or asked for
        it is stale."""
        self._drop(room)
        asking = self._asking.get(room)
        if asking is not None:
            asking[0] = next(self._tickets)

    def clear(self) -> None:
        """Drop every answer (a worker was recovered: its rooms were rebuilt, perhaps without a row)."""
        for room in list(self._kept):
            self._drop(room)
        for asking in self._asking.values():
            asking[0] = next(self._tickets)

    def _drop(self, room: str) -> None:
        kept = self._kept.pop(room, None)
        if kept is not None:
            self._bytes -= len(kept)
