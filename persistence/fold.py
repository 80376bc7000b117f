"""Folding a room's log into a snapshot without dropping updates that are not integrated yet.

A Yjs update can depend on another one (an insert next to an item, a delete of an item) that the log does
not hold yet: another replica has it queued, a client will re-send it, or its INSERT committed after the
compaction read the log. A Doc keeps such an update *pending*, and ``Doc.get_update()`` leaves pending
structs and deletes out (Yrs, unlike Yjs, does not encode them). A snapshot made that way, followed by a
delete of every row it read, loses those updates for good.

So :func:`fold` reports which rows the snapshot really holds: a row is folded when every struct it carries
is below the doc's state vector and every range it deletes is too (Yrs applies a pending delete once
its target arrives, so a covered range is a deleted range). Rows that are not folded stay in the log;
the next load applies them after the snapshot, pending again, until what they wait for arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycrdt import get_update

from collab_server.protocol import Reader, decode_state_vector
from persistence.merge import build_doc


@dataclass(frozen=True, slots=True)
class Folded:
    snapshot: bytes  # full-state update of everything integrated
    state_vector: bytes
    folded: list[int]  # indexes into the updates passed in: the rows the snapshot holds

    def pending(self, count: int) -> int:
        return count - len(self.folded)


def fold(room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
    """Merge ``snapshot`` and ``updates``; CorruptDocument (naming the part) if any cannot be decoded.

    pycrdt holds the GIL for each call; run this in a thread to keep an event loop responsive.
    """
    doc = build_doc(room, snapshot, updates)
    state = doc.get_state()
    clocks = decode_state_vector(state)
    folded = [index for index, update in enumerate(updates) if _integrated(update, state, clocks)]
    return Folded(doc.get_update(), state, folded)


def _integrated(update: bytes, state: bytes, clocks: dict[int, int]) -> bool:
    # get_update(update, state) is the part of ``update`` beyond ``state``: its structs the doc lacks,
    # plus its whole delete set. No structs left and every deleted range below the state: integrated.
    diff = Reader(get_update(update, state))
    if diff.var_uint("struct count"):
        return False
    for _ in range(diff.var_uint("delete set clients")):
        client = diff.var_uint("delete set client")
        for _ in range(diff.var_uint("delete set ranges")):
            clock = diff.var_uint("deleted clock")
            length = diff.var_uint("deleted length")
            if clocks.get(client, 0) < clock + length:
                return False
    return True
