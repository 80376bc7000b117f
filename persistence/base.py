"""The DocumentStore seam: an append-only update log per room, compacted into snapshot versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What a room loads from: its latest snapshot plus the log written after it, in seq order."""

    snapshot: bytes | None
    updates: list[bytes]

    @property
    def log_bytes(self) -> int:
        return sum(len(update) for update in self.updates)


@dataclass(frozen=True, slots=True)
class Version:
    """One snapshot version of a room. ``label`` is set for versions created on demand."""

    version: int
    created_at: float
    size: int
    label: str | None = None


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

    async def compact(self, room: str, *, label: str | None = None) -> Version | None:
        """Fold the room's snapshot and log into a new snapshot version; None if nothing is stored."""
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

    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything queued before the call is committed."""
        ...
