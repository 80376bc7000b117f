"""The DocumentStore seam: an append-only update log per room, compacted into snapshot versions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What a room loads from: its latest snapshot plus the log written after it, in seq order.
    ``snapshot_version`` and ``seqs`` name the rows, so that a bad one can be moved to quarantine."""

    snapshot: bytes | None
    updates: list[bytes]
    snapshot_version: int | None = None
    seqs: list[int] = field(default_factory=list)

    @property
    def log_bytes(self) -> int:
        return sum(len(update) for update in self.updates)


@dataclass(frozen=True, slots=True)
class Version:
    """One snapshot version of a room. ``label`` is set for versions created on demand (named versions,
    never pruned), ``created_by`` to the user who asked for one."""

    version: int
    created_at: float
    size: int
    label: str | None = None
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class Folded:
    """A fold of stored rows, made by the document engine (never by the store: see ``Fold``)."""

    snapshot: bytes  # full-state update of everything integrated
    state_vector: bytes
    folded: list[int]  # indexes into the updates passed in: the rows the snapshot holds
    bad: list[tuple[int, str]] = field(default_factory=list)  # (index, or -1 for the snapshot; reason)

    def pending(self, count: int) -> int:
        return count - len(self.folded) - sum(1 for index, _ in self.bad if index >= 0)


Fold = Callable[[str, bytes | None, Sequence[bytes]], Awaitable[Folded]]
"""``(room, snapshot, updates) -> Folded``: the store calls it inside ``compact`` and writes the result.
The store never decodes Yjs bytes itself: that runs in the CRDT workers (``collab_server.crdt``)."""


@dataclass(frozen=True, slots=True)
class PoisonRow:
    """A stored row to move to quarantine: a logged update (``seq``) or a snapshot (``version``)."""

    kind: str  # "update" or "snapshot"
    number: int  # seq of an update, version of a snapshot
    reason: str


def poison_rows(
    bad: Sequence[tuple[int, str]], snapshot_version: int | None, seqs: Sequence[int]
) -> list[PoisonRow]:
    """The stored rows named by (index into ``seqs``, or -1 for the snapshot; reason) pairs."""
    rows = []
    for index, reason in bad:
        if index < 0:
            if snapshot_version is not None:
                rows.append(PoisonRow("snapshot", snapshot_version, reason))
        elif index < len(seqs):
            rows.append(PoisonRow("update", seqs[index], reason))
    return rows


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """A row kept in ``room_quarantine``: never loaded again, never deleted."""

    room: str
    kind: str
    number: int
    data: bytes
    reason: str
    quarantined_at: float


class DocumentStore(Protocol):
    """Where rooms' documents live.

    Writes are appends of Yjs updates; reading merges the newest snapshot with the log after it.
    ``compact`` folds the log into a new snapshot version *inside the store* (it reads what is stored,
    so updates other replicas appended are never dropped), writing the snapshot before deleting the
    rows it covers: a crash in between leaves duplicates, which a CRDT ignores, never a gap.

    Errors: StoreUnavailable when the backend cannot be reached, CorruptDocument when stored bytes
    cannot be decoded (the bytes are left as they are).
    """

    async def load(self, room: str) -> StoredDocument | None:
        """The room's stored document, or None if nothing was ever stored for it."""
        ...

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Append ``(room, update)`` pairs in one transaction (the group commit)."""
        ...

    async def compact(
        self, room: str, *, fold: Fold, label: str | None = None, created_by: str | None = None
    ) -> Version | None:
        """Fold the room's snapshot and log into a new snapshot version; None if nothing is stored.
        Rows the fold reports bad are moved to quarantine in the same transaction. A ``label`` makes it a
        named version. Then automatic (unnamed) versions other than the newest are pruned: past the
        store's count, or older than its maximum age."""
        ...

    async def quarantine(self, room: str, rows: Sequence[PoisonRow]) -> int:
        """Move rows out of the room's log/snapshots into ``room_quarantine`` (kept); returns rows moved."""
        ...

    async def quarantined(self, room: str | None = None) -> list[QuarantinedRow]:
        """Rows in quarantine, oldest first (all rooms when ``room`` is None)."""
        ...

    async def room_names(self) -> list[str]:
        """Every room with stored rows."""
        ...

    async def versions(self, room: str) -> list[Version]:
        """Snapshot versions kept for the room, newest first."""
        ...

    async def read_version(self, room: str, version: int) -> bytes | None:
        """The full-state update of one snapshot version."""
        ...

    async def delete(self, room: str) -> None:
        """Remove everything stored for the room: log, snapshots, versions (the room was deleted)."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where the documents are, for the startup log (no credentials)."""
        ...


class UpdateWriter(Protocol):
    """Where rooms hand their local updates to be stored: queued, never awaited on the hot path, and
    committed in batches (``persistence.writer.AppendWriter``)."""

    healthy: bool
    """False while the store is failing; ``/readyz`` reports it."""

    @property
    def pending(self) -> int:
        """Updates queued and not yet committed."""
        ...

    def can_take(self, nbytes: int) -> bool:
        """False when the buffer for an outage is full: the caller refuses the edit before applying it."""
        ...

    def append(self, room: str, update: bytes) -> None: ...

    def pending_for(self, room: str) -> list[bytes]:
        """The room's updates queued and not yet committed, oldest first (a room rebuilt from the
        store needs them too: they were acknowledged)."""
        ...

    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything queued before the call is committed."""
        ...
