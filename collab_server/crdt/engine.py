"""The ``DocumentEngine`` port: what rooms and compaction may ask of the documents, wherever they live.

Every method names its room; the engine holds one document per loaded room. ``apply`` is not a
coroutine: updates are queued and sent to the room's worker once per event-loop tick, all of them in
one request, and each update's outcome comes back through its callback. Everything else is awaited,
and all of a room's requests are handled in the order they were made (a diff asked after an apply
sees the update).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from persistence.base import Folded

if TYPE_CHECKING:  # a room's worker process never imports the document logic (see worker.handle)
    from collab_server.crdt.document_calls import DocumentAnswer, DocumentCall


class Refusal(IntEnum):
    """Why the engine refused an update or a stored row. The words are ours, never the library's."""

    MALFORMED = 1  # the library rejected the bytes as undecodable
    LIBRARY_FAILURE = 2  # the library panicked or failed part-way (the document was rebuilt)
    STALLED = 3  # the worker did not answer within the deadline (killed and restarted)
    CRASHED = 4  # the worker died while handling it (killed and restarted)
    POISON = 5  # the same bytes killed a worker a short while ago
    NOT_LOADED = 6  # the room's document is not in the engine (a rebuild failed)
    BAD_STATE_VECTOR = 7

    @property
    def label(self) -> str:
        """Metric label and log word."""
        return self.name.lower()

    @property
    def reason(self) -> str:
        """What a client is told (close reason) and what the quarantine records."""
        return _REASONS[self]


_REASONS = {
    Refusal.MALFORMED: "update cannot be decoded",
    Refusal.LIBRARY_FAILURE: "update could not be applied to the document",
    Refusal.STALLED: "update made the document engine stall",
    Refusal.CRASHED: "update made the document engine crash",
    Refusal.POISON: "update was refused recently as harmful",
    Refusal.NOT_LOADED: "room is not available right now",
    Refusal.BAD_STATE_VECTOR: "state vector cannot be decoded",
}


class EngineError(Exception):
    """A request the engine could not answer (its worker died twice, the room is not loaded)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of one update. ``update`` is what the library's observer emitted for it (empty when
    the update changed nothing or waits for another one); ``state_vector`` is the room's afterwards;
    ``new`` is False when the document already held everything the update carries (a re-sent update)."""

    refusal: Refusal | None
    update: bytes = b""
    state_vector: bytes = b""
    new: bool = True

    @property
    def accepted(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True, slots=True)
class BadRow:
    """A stored row that could not be applied: ``index`` into the updates given, or -1 for the snapshot."""

    index: int
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Loaded:
    """A room is in the engine: its state vector, and the stored rows that were left out."""

    state_vector: bytes
    bad: list[BadRow] = field(default_factory=list)


OnApplied = Callable[[Applied], None]


class DocumentEngine(Protocol):
    """Where rooms' documents live (``pool.WorkerPool``; ``local.InProcessEngine`` in unit tests)."""

    async def load(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Loaded:
        """Build the room's document from stored rows; rows that fail are reported, never applied."""
        ...

    def apply(self, room: str, update: bytes, on_applied: OnApplied, *, source: object = None) -> None:
        """Queue an update; ``on_applied`` runs on the event loop once the engine accepted or refused it.

        Updates queued in one tick for one room from the same ``source`` (a peer, say; None: no source)
        are applied in one transaction, and what they changed comes back as one update, in the answer
        of the last of them (the others' answers carry an empty update)."""
        ...

    async def diff(self, room: str, state_vector: bytes) -> bytes:
        """Everything the room has beyond ``state_vector``; EngineError(BAD_STATE_VECTOR) if malformed."""
        ...

    async def state_vector(self, room: str) -> bytes: ...

    async def delete_set(self, room: str) -> bytes:
        """The room's deletions, as an update without structs."""
        ...

    async def full_state(self, room: str) -> bytes: ...

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        """Fold stored rows into a snapshot (a separate document: the loaded one is not touched)."""
        ...

    async def compute(self, room: str, call: DocumentCall) -> DocumentAnswer:
        """Run a stateless document call (JSON view, patch, restore, ...) on bytes, off the room's own
        worker; DocumentError if the document logic refuses it, EngineError if no worker could run it."""
        ...

    async def unload(self, room: str) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...
