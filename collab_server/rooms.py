"""RoomManager: loads rooms on first join, unloads them after the last peer leaves, compacts their logs.

- Concurrent joins of a room that is not loaded share one in-flight load; nobody is answered before the
  load completes, and a failed load refuses the joiners: it never becomes an empty document.
- The REST document routes ``use`` a room without a peer: they share the same load, and the room stays
  loaded while they hold it, then unloads after the grace period like a room its last peer left.
- A room whose last peer left stays loaded for a grace period (a reload or a quick reconnect finds it
  warm), then its pending appends are flushed, its log compacted, and it is dropped.
- It is the rooms' sink: local updates go to the group-commit writer; a room whose log passes the
  thresholds is compacted in the background, one compaction per room at a time.
- Documents live in the CRDT engine (``collab_server.crdt``): a load hands the stored rows to it, and a
  stored row the engine cannot apply (it fails, panics, crashes or stalls the worker) is moved to
  quarantine, so stored data can never brick a room. Compaction folds in the engine too.
- It is the engine's ``RoomSource``: a restarted worker gets each room back as the store's rows plus the
  room's updates still queued in the writer (acknowledged, not yet committed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from collab_server import metrics
from collab_server.broadcasts import Broadcasts
from collab_server.crdt.engine import BadRow, DocumentEngine, EngineError, Loaded, Refusal
from collab_server.errors import CloseCode, FoldFailed, StoreError, StoreUnavailable
from collab_server.peer import Peer
from collab_server.replication import Replication, SingleReplica
from collab_server.room import Room
from collab_server.settings import Settings
from persistence.base import DocumentStore, Folded, StoredDocument, UpdateWriter, poison_rows

logger = logging.getLogger(__name__)

_UNLOAD_RETRY_MAX = 60.0


class RoomManager:
    """The rooms this replica holds in memory."""

    def __init__(
        self,
        store: DocumentStore,
        writer: UpdateWriter,
        settings: Settings,
        replication: Replication | None = None,
        *,
        engine: DocumentEngine | None = None,
    ) -> None:
        if engine is None:
            # Tests only: create_app always passes a WorkerPool (the CRDT library out of this process).
            from collab_server.crdt.local import InProcessEngine

            engine = InProcessEngine()
        self.engine = engine
        self._store = store
        self._writer = writer
        self._settings = settings
        self.replication: Replication = replication or SingleReplica()
        self._rooms: dict[str, Room] = {}
        self._broadcasts = Broadcasts()  # every room's flushes, a few milliseconds' worth per turn
        self._loading: dict[str, asyncio.Task[Room]] = {}
        self._unload_timers: dict[str, asyncio.TimerHandle] = {}
        self._holds: dict[str, int] = {}  # REST calls using a room without a peer (see use)
        self._compacting: set[str] = set()
        # Loaded rooms whose rows the engine could not fold: not compacted again until they reload.
        self._unfoldable: set[str] = set()
        # The stored rows each room's rebuild in a fresh CRDT worker was given (``rebuild_input``), until
        # it is rebuilt or lost: they name the rows a rebuild leaves out.
        self._rebuilding: dict[str, StoredDocument] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        # Every peer's on_close: one bound method shared by all, not a closure per peer (200 bytes each).
        self._on_peer_closed = self._peer_closed

    def __repr__(self) -> str:
        return f"RoomManager(rooms={len(self._rooms)}, loading={len(self._loading)})"

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    @property
    def rooms(self) -> dict[str, Room]:
        return self._rooms

    # -- join / leave --------------------------------------------------------------------------

    async def join(self, name: str, peer: Peer) -> Room:
        """Add ``peer`` to room ``name``, loading it first if needed.

        Raises StoreError (or TimeoutError) when the room cannot be loaded.
        """
        room = await self._loaded(name)
        room.add(peer)
        peer.on_close = self._on_peer_closed
        metrics.CONNECTIONS.inc()
        return room

    def _peer_closed(self, peer: Peer) -> None:
        # The room a peer joined is the loaded room of its name for as long as the peer is in it: a room
        # unloads only once its peers have left, and discard() and room_lost() make them leave themselves
        # (leave() ignores a peer that is not in the room).
        room = self._rooms.get(peer.room_name)
        if room is not None:
            self.leave(room, peer)

    @asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[Room]:
        """Room ``name`` loaded for a REST call without a peer: the load is shared with joiners, and the
        room stays loaded until the call is done, then unloads after the grace period if nobody holds it.

        Raises StoreError (or TimeoutError) when the room cannot be loaded.
        """
        room = await self._loaded(name)
        self._holds[name] = self._holds.get(name, 0) + 1
        try:
            yield room
        finally:
            left = self._holds.pop(name) - 1
            if left:
                self._holds[name] = left
            self._unload_when_idle(room)

    async def _loaded(self, name: str) -> Room:
        """The room, loaded (joining an in-flight load) and taken off its unload timer."""
        room = self._rooms.get(name)
        if room is None:
            task = self._loading.get(name)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._load(name), name=f"load:{name}")
                self._loading[name] = task
                task.add_done_callback(lambda _t: self._loading.pop(name, None))
            # shield: one joiner timing out must not cancel the load the others share
            room = await asyncio.wait_for(asyncio.shield(task), self._settings.load_timeout)
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        return room

    def _idle(self, room: Room) -> bool:
        return not room.peers and not self._holds.get(room.name)

    def _unload_when_idle(self, room: Room) -> None:
        if self._idle(room) and not self._closing and self._rooms.get(room.name) is room:
            self._schedule_unload(room, self._settings.room_grace)

    def leave(self, room: Room, peer: Peer) -> None:
        """Remove ``peer``; idempotent. The last one out starts the unload grace period."""
        if peer not in room.peers:
            return
        room.remove(peer)
        metrics.CONNECTIONS.dec()
        self._unload_when_idle(room)

    async def discard(self, name: str) -> None:
        """Drop a deleted room from memory without saving it (its stored data is being deleted).
        Its peers must have been closed already; what the room still flushes goes to the writer, so
        flush the writer before deleting the room's stored data."""
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        room = self._rooms.pop(name, None)
        self._unfoldable.discard(name)
        if room is None:
            return
        for peer in list(room.peers):
            self.leave(room, peer)
        room.close()
        metrics.ROOMS_LOADED.set(len(self._rooms))
        await self.replication.room_unloaded(name)

    # -- load / unload -------------------------------------------------------------------------

    async def _load(self, name: str) -> Room:
        started = time.perf_counter()
        await self.replication.room_loading(name)
        try:
            # Updates still queued for the store count too: a room dropped by the engine (or unloaded)
            # and loaded again before they commit must not lose them (see rebuild_input).
            queued = self._writer.pending_for(name)
            stored = await self._store.load(name)
            if stored is None:
                loaded = await self.engine.load(name, None, queued)
                log_updates = log_bytes = 0
            else:
                loaded = await self.engine.load(name, stored.snapshot, [*stored.updates, *queued])
                log_updates, log_bytes = len(stored.updates), stored.log_bytes
                if len(_with_verdict(loaded.bad)) < len(loaded.bad):
                    # Isolation gave up on a row because the worker kept restarting under it: no verdict
                    # on the row, so nothing is quarantined, and the room is not served without it.
                    await self.engine.unload(name)
                    raise EngineError(Refusal.NOT_LOADED)
                if loaded.bad:
                    await self._quarantine(name, stored, loaded)
        except (StoreError, EngineError) as exc:
            metrics.ROOM_LOAD_FAILURES.inc()
            logger.error("room %r could not be loaded: %s", name, exc, extra={"room": name})
            await self.replication.room_unloaded(name)
            if isinstance(exc, EngineError):
                raise StoreUnavailable(f"room {name!r} could not be loaded") from exc
            raise
        room = Room(
            name,
            self.engine,
            self,
            known_state_vector=loaded.state_vector,
            log_updates=log_updates,
            log_bytes=log_bytes,
            broadcasts=self._broadcasts,
        )
        self.replication.room_loaded(room)
        # Published to joiners only once other replicas' unstored edits are in: until then a join waits
        # on this load task, never sees the room in _rooms.
        await self.replication.room_ready(room)
        self._rooms[name] = room
        metrics.ROOMS_LOADED.set(len(self._rooms))
        elapsed = time.perf_counter() - started
        metrics.ROOM_LOAD_SECONDS.observe(elapsed)
        logger.debug("room %r loaded in %.1f ms", name, elapsed * 1000, extra={"room": name})
        return room

    async def _quarantine(self, name: str, stored: StoredDocument, loaded: Loaded) -> None:
        """Move the rows the engine could not apply out of the way: the room loaded without them."""
        metrics.ROOM_LOAD_FAILURES.inc()
        bad = [(row.index, row.refusal.reason) for row in loaded.bad]
        rows = poison_rows(bad, stored.snapshot_version, stored.seqs)
        logger.error(
            "room %r: %d stored rows could not be applied (%s); moved to quarantine, the room loads without them",
            name,
            len(rows),
            ", ".join(sorted({row.reason for row in rows})),
            extra={"room": name},
        )
        try:
            moved = await self._store.quarantine(name, rows)
        except StoreError as exc:
            # The room still loads without them; the next load finds them again.
            logger.error("room %r: moving rows to quarantine failed: %s", name, exc, extra={"room": name})
            return
        metrics.QUARANTINED_UPDATES.inc(moved)

    def _schedule_unload(self, room: Room, delay: float) -> None:
        old = self._unload_timers.pop(room.name, None)
        if old is not None:
            old.cancel()
        self._unload_timers[room.name] = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._unload(room, delay))
        )

    async def _unload(self, room: Room, previous_delay: float) -> None:
        self._unload_timers.pop(room.name, None)
        if not self._idle(room) or self._rooms.get(room.name) is not room:
            return
        try:
            await self._persist(room)
        except (StoreError, TimeoutError) as exc:
            # Keep the room (and its unsaved changes) in memory and try again later.
            retry = min(max(previous_delay * 2, 1.0), _UNLOAD_RETRY_MAX)
            logger.warning("room %r not unloaded, store failed (%s); retry in %.0fs", room.name, exc, retry)
            if self._idle(room):
                self._schedule_unload(room, retry)
            return
        if not self._idle(room) or self._rooms.get(room.name) is not room:
            return  # somebody joined (or a REST call took it) while we were saving
        del self._rooms[room.name]
        self._unfoldable.discard(room.name)
        room.close()
        metrics.ROOMS_LOADED.set(len(self._rooms))
        await self.engine.unload(room.name)
        await self.replication.room_unloaded(room.name)
        logger.debug("room %r unloaded", room.name, extra={"room": room.name})

    async def _persist(self, room: Room) -> None:
        """Commit the room's queued appends and fold its log into a snapshot if it has one (and it can)."""
        await self._writer.flush(timeout=self._settings.shutdown_timeout)
        if room.log_updates and room.name not in self._unfoldable:
            try:
                await self._compact(room)
            except FoldFailed as exc:
                # Every row is committed (the flush above); only folding them failed. Keeping the room
                # loaded to retry would crash its worker again at every try (a fuzz run: every 20-60 s,
                # restarting the worker's other rooms each time, for as long as the server ran); its next
                # load replays the rows one by one and quarantines the ones that break it.
                logger.warning("room %r saved without compaction: %s", room.name, exc, extra={"room": room.name})

    # -- sink ----------------------------------------------------------------------------------

    def accepts(self, nbytes: int) -> bool:
        return self._writer.can_take(nbytes)

    def local_update(self, room: Room, update: bytes) -> None:
        self._writer.append(room.name, update)
        self.replication.publish_update(room, update)
        settings = self._settings
        if (
            (room.log_updates >= settings.compact_updates or room.log_bytes >= settings.compact_bytes)
            and room.name not in self._compacting
            and room.name not in self._unfoldable
        ):
            # Marked now, not when the task runs: otherwise every update while the flush waits (a store
            # outage can last minutes) would spawn one more flush-then-compact task.
            self._compacting.add(room.name)
            self._spawn(self._compact_after_flush(room))

    def local_awareness(self, room: Room, message: bytes) -> None:
        self.replication.publish_awareness(room, message)

    # -- compaction ----------------------------------------------------------------------------

    async def _compact_after_flush(self, room: Room) -> None:
        # local_update marked the room before spawning this; the mark is released here whatever happens.
        try:
            await self._writer.flush(timeout=self._settings.shutdown_timeout)
            await self._fold(room)
        except (StoreError, TimeoutError) as exc:
            logger.warning("compaction of room %r failed: %s", room.name, exc, extra={"room": room.name})
        finally:
            self._compacting.discard(room.name)

    async def _compact(self, room: Room) -> None:
        """Compact now (unload, shutdown), unless a compaction of the room is already under way."""
        if room.name in self._compacting:
            return
        self._compacting.add(room.name)
        try:
            await self._fold(room)
        finally:
            self._compacting.discard(room.name)

    async def _fold(self, room: Room) -> None:
        # Only what was counted before the compaction started is covered by it; later appends stay counted.
        covered_updates, covered_bytes = room.log_updates, room.log_bytes
        try:
            await self._store.compact(room.name, fold=self.fold)
        except FoldFailed:
            # Not tried again while the room stays loaded (each try would cost its worker a crash).
            self._unfoldable.add(room.name)
            raise
        except StoreError:
            metrics.STORE_ERRORS.labels("compact").inc()
            raise
        room.log_updates -= covered_updates
        room.log_bytes -= covered_bytes
        metrics.COMPACTIONS.inc()

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        """The store's ``Fold``: the engine folds; rows it cannot apply go to quarantine with the compaction."""
        try:
            folded = await self.engine.fold(room, snapshot, updates)
        except EngineError as exc:
            raise FoldFailed(f"room {room!r} could not be folded: {exc}") from exc
        # A row without a verdict (``_with_verdict``) is neither folded nor quarantined: it stays in the log.
        unavailable = Refusal.NOT_LOADED.reason
        folded = dataclasses.replace(folded, bad=[row for row in folded.bad if row[1] != unavailable])
        if folded.bad:
            metrics.QUARANTINED_UPDATES.inc(len(folded.bad))
            logger.error(
                "room %r: compaction moves %d stored rows it could not apply to quarantine",
                room,
                len(folded.bad),
                extra={"room": room},
            )
        return folded

    # -- the engine's RoomSource ---------------------------------------------------------------

    async def rebuild_input(self, room: str) -> tuple[bytes | None, list[bytes]]:
        # Queued updates first: one committed while the store is read is then in the store's rows (or in
        # both, harmless), never in neither.
        queued = self._writer.pending_for(room)
        stored = await self._store.load(room)
        if stored is None:
            self._rebuilding.pop(room, None)
            return None, queued
        self._rebuilding[room] = stored  # names the rows, should the rebuild leave some out
        return stored.snapshot, [*stored.updates, *queued]

    def room_rebuilt(self, room: str, loaded: Loaded) -> None:
        stored = self._rebuilding.pop(room, None)
        loaded = Loaded(loaded.state_vector, _with_verdict(loaded.bad))  # the others stay in the log
        if loaded.bad and stored is not None:
            # Quarantined now, as a load would: otherwise every later rebuild of the room (after every
            # restart of its worker) replays its rows one by one again to leave the same rows out.
            self._spawn(self._quarantine(room, stored, loaded))
        live = self._rooms.get(room)
        if live is not None:
            live.known_state_vector = loaded.state_vector
        logger.info("room %r rebuilt in a fresh CRDT worker", room, extra={"room": room})

    def room_unavailable(self, room: Room) -> None:
        if self._rooms.get(room.name) is room:
            logger.warning("room %r is not in the CRDT engine; dropping it", room.name, extra={"room": room.name})
            self.room_lost(room.name)

    def room_lost(self, room: str) -> None:
        loaded = self._rooms.pop(room, None)
        self._unfoldable.discard(room)
        self._rebuilding.pop(room, None)
        if loaded is None:
            return
        metrics.ROOMS_LOADED.set(len(self._rooms))
        for peer in list(loaded.peers):
            peer.close(CloseCode.TRY_AGAIN_LATER, "room is being reloaded: reconnect")
            self.leave(loaded, peer)  # its on_close finds no room of its name any more
        loaded.close()
        self._spawn(self.replication.room_unloaded(room))

    # -- lifecycle -----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> int:
        """Flush and compact every room (used on shutdown), then forget them; returns rooms saved."""
        self._closing = True
        for timer in self._unload_timers.values():
            timer.cancel()
        self._unload_timers.clear()
        for room in list(self._rooms.values()):
            room.flush()
        # Every room's edits are committed first, in one flush; compacting them is only an optimisation,
        # done while the shutdown timeout lasts. A fuzz run's shutdown spent minutes folding rooms whose
        # folds failed one after the other, while an orchestrator would have killed the process after its
        # grace period anyway (nothing lost then either: the rows are committed, and compacted next time).
        timeout = self._settings.shutdown_timeout
        try:
            await self._writer.flush(timeout=timeout)
        except (StoreError, TimeoutError) as exc:
            logger.error("shutdown: the rooms' last edits could not be committed: %s", exc)
            unsaved = len(self._rooms)
        else:
            unsaved = 0
            deadline = asyncio.get_running_loop().time() + timeout
            for room in list(self._rooms.values()):
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    if remaining <= 0:
                        raise TimeoutError("out of shutdown time")
                    await asyncio.wait_for(self._persist(room), remaining)
                except (StoreError, TimeoutError) as exc:
                    reason = str(exc) or "out of shutdown time"
                    logger.warning("room %r: saved, not compacted on shutdown (%s)", room.name, reason)
        saved = len(self._rooms) - unsaved
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name, room in list(self._rooms.items()):
            room.close()
            await self.engine.unload(name)
            await self.replication.room_unloaded(name)
        self._rooms.clear()
        metrics.ROOMS_LOADED.set(0)
        return saved


def _with_verdict(bad: list[BadRow]) -> list[BadRow]:
    """The rows of ``bad`` the engine found bad. One left out with NOT_LOADED has no verdict: isolation gave
    up on it because its worker kept restarting under it (another room's op, or a busy machine)."""
    return [row for row in bad if row.refusal is not Refusal.NOT_LOADED]
