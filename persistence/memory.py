"""In-memory DocumentStore: the reference implementation of the contract, and ``memory://``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from persistence.base import StoredDocument, Version
from persistence.fold import fold


@dataclass
class _Snapshot:
    version: int
    update: bytes
    created_at: float
    label: str | None


@dataclass
class _Room:
    snapshots: list[_Snapshot] = field(default_factory=list)  # oldest first
    log: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, update)


class MemoryStore:
    """Keeps everything in dicts; nothing survives the process. Same semantics as the SQL backends."""

    def __init__(self, *, keep_versions: int = 10) -> None:
        self._rooms: dict[str, _Room] = {}
        self._seq = itertools.count(1)
        self._keep_versions = keep_versions

    def __repr__(self) -> str:
        return f"MemoryStore(rooms={len(self._rooms)})"

    def describe(self) -> str:
        return "memory (documents are lost when the process stops)"

    async def load(self, room: str) -> StoredDocument | None:
        stored = self._rooms.get(room)
        if stored is None or (not stored.snapshots and not stored.log):
            return None
        snapshot = stored.snapshots[-1].update if stored.snapshots else None
        return StoredDocument(snapshot, [update for _, update in stored.log])

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        for room, update in entries:
            self._rooms.setdefault(room, _Room()).log.append((next(self._seq), bytes(update)))

    async def compact(self, room: str, *, label: str | None = None) -> Version | None:
        stored = self._rooms.get(room)
        if stored is None or (not stored.snapshots and not stored.log):
            return None
        covered = list(stored.log)
        snapshot = stored.snapshots[-1].update if stored.snapshots else None
        result = fold(room, snapshot, [update for _, update in covered])
        number = stored.snapshots[-1].version + 1 if stored.snapshots else 1
        stored.snapshots.append(_Snapshot(number, result.snapshot, time.time(), label))
        # Only rows the snapshot really holds leave the log (see persistence.fold).
        folded = {covered[i][0] for i in result.folded}
        stored.log = [(seq, update) for seq, update in stored.log if seq not in folded]
        self._prune(stored)
        newest = stored.snapshots[-1]
        return Version(newest.version, newest.created_at, len(newest.update), newest.label)

    def _prune(self, stored: _Room) -> None:
        # Named versions are the user's; only unnamed ones are pruned to the configured count.
        unnamed = [s for s in stored.snapshots[:-1] if s.label is None]
        excess = len(unnamed) - (self._keep_versions - 1)
        if excess > 0:
            drop = {id(s) for s in unnamed[:excess]}
            stored.snapshots = [s for s in stored.snapshots if id(s) not in drop]

    async def versions(self, room: str) -> list[Version]:
        stored = self._rooms.get(room)
        if stored is None:
            return []
        return [
            Version(s.version, s.created_at, len(s.update), s.label) for s in reversed(stored.snapshots)
        ]

    async def read_version(self, room: str, version: int) -> bytes | None:
        stored = self._rooms.get(room)
        for snapshot in stored.snapshots if stored else []:
            if snapshot.version == version:
                return snapshot.update
        return None

    async def delete(self, room: str) -> None:
        self._rooms.pop(room, None)

    async def close(self) -> None:
        pass
