"""``collab-server rooms check [--repair]``: does every stored room load? If not, quarantine what breaks it.

Every stored room is loaded into a CRDT worker exactly as the server loads it: rows the library refuses,
panics on, crashes on or stalls on are found (row by row, in fresh workers, when a row kills one) and
reported. With ``--repair`` they are moved to ``room_quarantine`` (kept, never deleted), so that every
room loads. The report ends with what the quarantine holds. Exit code 0 when every room loads with all its
rows (after a repair: when everything that did not was quarantined), 1 otherwise.

A room that *cannot be loaded* (the store fails, or the engine refuses the room itself) is not the same as a
room that *holds rows that do not load*: the server loads the latter without those rows, quarantining them
as it does. And a repaired database is not guaranteed to check clean a second time: rows that read memory
the library had freed fail in some loads and not others, in fresh workers alike (fuzz run J's database,
docs/benchmarks.md: one room's rows failed in 4 of 5 fresh loads and in none of the fifth).
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from collab_server.crdt.engine import EngineError, Loaded
from collab_server.crdt.pool import WorkerPool
from collab_server.errors import StoreError
from persistence.base import DocumentStore, poison_rows


class _StoreSource:
    """A restarted worker rebuilds the room being checked from the store alone (no writer here)."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def rebuild_input(self, room: str) -> tuple[bytes | None, list[bytes]]:
        stored = await self._store.load(room)
        return (stored.snapshot, stored.updates) if stored else (None, [])

    def room_rebuilt(self, room: str, loaded: Loaded) -> None:
        pass  # rows it left out are reported (and with --repair moved) by check_rooms itself

    def room_lost(self, room: str) -> None:
        pass


async def check_rooms(store: DocumentStore, engine: WorkerPool, *, repair: bool, out: TextIO) -> int:
    """Check (and with ``repair`` fix) every stored room; returns the exit code."""
    engine.attach(_StoreSource(store))
    names = await store.room_names()
    unloadable = 0
    with_bad_rows = 0
    for name in names:
        try:
            stored = await store.load(name)
            if stored is None:
                continue
            loaded = await engine.load(name, stored.snapshot, stored.updates)
            # Served means encoded too (every join's sync, every compaction): a room that loads but cannot
            # encode its document cannot be served (EngineError).
            await engine.full_state(name)
            await engine.unload(name)
        except (StoreError, EngineError) as exc:
            unloadable += 1
            print(f"{name!r}: cannot be checked: {exc}", file=out)
            continue
        if not loaded.bad:
            continue
        bad = [(row.index, row.refusal.reason) for row in loaded.bad]
        rows = poison_rows(bad, stored.snapshot_version, stored.seqs)
        described = ", ".join(f"{row.kind} {row.number} ({row.reason})" for row in rows)
        print(f"{name!r}: {len(rows)} stored rows do not load: {described}", file=out)
        with_bad_rows += 1
        if repair:
            moved = await store.quarantine(name, rows)
            print(f"{name!r}: moved {moved} rows to quarantine; the room loads without them", file=out)
    kept = await store.quarantined()
    held = "held rows that do not load (moved to quarantine)" if repair else "hold rows that do not load"
    print(f"checked {len(names)} rooms: {unloadable} cannot be loaded, {with_bad_rows} {held}", file=out)
    if kept:
        per_room = Counter(row.room for row in kept)
        print(f"quarantine holds {len(kept)} rows of {len(per_room)} rooms:", file=out)
        for room, count in sorted(per_room.items()):
            reasons = sorted({row.reason for row in kept if row.room == room})
            print(f"  {room!r}: {count} rows ({'; '.join(reasons)})", file=out)
    return 1 if unloadable or (with_bad_rows and not repair) else 0
