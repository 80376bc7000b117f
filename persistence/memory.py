"""In-memory DocumentStore: the reference implementation of the contract, and ``memory://``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from persistence.base import Fold, PoisonRow, QuarantinedRow, StoredDocument, Version, poison_rows


@dataclass
class _Snapshot:
    version: int
    update: bytes
    created_at: float
    label: str | None
    created_by: str | None = None


@dataclass
class _Room:
    snapshots: list[_Snapshot] = field(default_factory=list)  # oldest first
    log: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, update)


class MemoryStore:
    """Keeps everything in dicts; nothing survives the process. Same semantics as the SQL backends."""

    def __init__(self, *, keep_versions: int = 10, max_version_age: float = 0.0) -> None:
        self._rooms: dict[str, _Room] = {}
        self._quarantine: list[QuarantinedRow] = []
        self._seq = itertools.count(1)
        self._keep_versions = keep_versions
        self._max_version_age = max_version_age

    def __repr__(self) -> str:
        return f"MemoryStore(rooms={len(self._rooms)})"

    def describe(self) -> str:
        return "memory (documents are lost when the process stops)"

    async def load(self, room: str) -> StoredDocument | None:
        stored = self._rooms.get(room)
        if stored is None or (not stored.snapshots and not stored.log):
            return None
        newest = stored.snapshots[-1] if stored.snapshots else None
        return StoredDocument(
            newest.update if newest else None,
            [update for _, update in stored.log],
            newest.version if newest else None,
            [seq for seq, _ in stored.log],
        )

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        rooms = self._rooms
        for room, update in entries:
            stored = rooms.get(room)
            if stored is None:  # not setdefault(room, _Room()): that builds a _Room for every update
                stored = rooms[room] = _Room()
            stored.log.append((next(self._seq), bytes(update)))

    async def compact(
        self, room: str, *, fold: Fold, label: str | None = None, created_by: str | None = None
    ) -> Version | None:
        stored = self._rooms.get(room)
        if stored is None or (not stored.snapshots and not stored.log):
            return None
        covered = list(stored.log)
        newest = stored.snapshots[-1] if stored.snapshots else None
        result = await fold(room, newest.update if newest else None, [update for _, update in covered])
        number = newest.version + 1 if newest else 1
        if result.bad:
            seqs = [seq for seq, _ in covered]
            await self.quarantine(room, poison_rows(result.bad, newest.version if newest else None, seqs))
        stored.snapshots.append(_Snapshot(number, result.snapshot, time.time(), label, created_by))
        # Only rows the snapshot really holds leave the log (see persistence.fold).
        folded = {covered[i][0] for i in result.folded}
        stored.log = [(seq, update) for seq, update in stored.log if seq not in folded]
        self._prune(stored)
        return _version(stored.snapshots[-1])

    def _prune(self, stored: _Room) -> None:
        # Named versions are the user's; only unnamed ones are pruned, to the configured count and age.
        # The newest version is the room's base: never pruned.
        unnamed = [s for s in stored.snapshots[:-1] if s.label is None]
        excess = max(len(unnamed) - (self._keep_versions - 1), 0)
        drop = {id(s) for s in unnamed[:excess]}
        if self._max_version_age > 0:
            oldest = time.time() - self._max_version_age
            drop |= {id(s) for s in unnamed if s.created_at < oldest}
        stored.snapshots = [s for s in stored.snapshots if id(s) not in drop]

    async def versions(self, room: str) -> list[Version]:
        stored = self._rooms.get(room)
        if stored is None:
            return []
        return [_version(s) for s in reversed(stored.snapshots)]

    async def read_version(self, room: str, version: int) -> bytes | None:
        stored = self._rooms.get(room)
        for snapshot in stored.snapshots if stored else []:
            if snapshot.version == version:
                return snapshot.update
        return None

    async def delete(self, room: str) -> None:
        self._rooms.pop(room, None)

    async def quarantine(self, room: str, rows: Sequence[PoisonRow]) -> int:
        stored = self._rooms.get(room)
        if stored is None:
            return 0
        moved = 0
        for row in rows:
            if row.kind == "update":
                found = [(seq, update) for seq, update in stored.log if seq == row.number]
                stored.log = [(seq, update) for seq, update in stored.log if seq != row.number]
                data = found[0][1] if found else None
            else:
                snaps = [s for s in stored.snapshots if s.version == row.number]
                stored.snapshots = [s for s in stored.snapshots if s.version != row.number]
                data = snaps[0].update if snaps else None
            if data is not None:
                self._quarantine.append(QuarantinedRow(room, row.kind, row.number, data, row.reason, time.time()))
                moved += 1
        return moved

    async def quarantined(self, room: str | None = None) -> list[QuarantinedRow]:
        return [row for row in self._quarantine if room is None or row.room == room]

    async def room_names(self) -> list[str]:
        return sorted(name for name, stored in self._rooms.items() if stored.snapshots or stored.log)

    async def close(self) -> None:
        pass


def _version(snapshot: _Snapshot) -> Version:
    return Version(snapshot.version, snapshot.created_at, len(snapshot.update), snapshot.label, snapshot.created_by)
