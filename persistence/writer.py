"""Group commit: appends from every room are written together, one transaction per short window.

The read loop of a socket never waits for the store: ``append`` only queues. A background task wakes on
the first queued update, waits ``window`` seconds so that concurrent edits join the batch, then writes
the whole batch with one ``append_many``. When the store fails, the batch stays queued and is retried
with backoff; updates keep queueing up to ``max_buffer_bytes``, past which ``can_take`` says no,
so that the caller can turn the peer away before applying its edit (the client keeps the edit and re-sends it later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from collab_server import metrics
from collab_server.errors import StoreUnavailable
from persistence.base import DocumentStore

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0
_BEHIND_LOG_EVERY = 10.0


@dataclass(slots=True)
class _Entry:
    room: str
    update: bytes
    queued_at: float
    committed: bool = False


class AppendWriter:
    """Queues ``(room, update)`` appends and commits them in batches."""

    def __init__(
        self,
        store: DocumentStore,
        *,
        window: float = 0.02,
        batch: int = 2000,
        max_buffer_bytes: int = 256 * 1024 * 1024,
        in_flight: int = 2,
    ) -> None:
        self._store = store
        # Batches committing at once. A commit is mostly waiting (the database's WAL flush); with one in
        # flight, an update that arrives during a commit waits for it and then for its own. Two overlap,
        # which halves the arrival-to-commit tail on PostgreSQL under load (docs/benchmarks.md).
        # Batches may then commit out of order; the log's order does not matter to a CRDT, and loads and
        # compaction handle an update that lands before one it depends on (persistence.fold).
        self._slots = asyncio.Semaphore(in_flight)
        self._sent = 0  # entries at the head of _pending already handed to a batch
        self._window = window
        self._batch = batch
        self._max_buffer_bytes = max_buffer_bytes
        self._pending: deque[_Entry] = deque()
        self._pending_bytes = 0
        self._appended = 0  # updates ever queued
        self._committed = 0  # updates ever committed; always a prefix of the queue order
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self._last_behind_log = 0.0
        self.healthy = True

    def __repr__(self) -> str:
        return f"AppendWriter(pending={len(self._pending)}, healthy={self.healthy})"

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="append-writer")

    def can_take(self, nbytes: int) -> bool:
        return self._pending_bytes + nbytes <= self._max_buffer_bytes

    def append(self, room: str, update: bytes) -> None:
        """Queue one update. Never refuses: callers gate new writes with ``can_take`` *before* applying
        them, because an update already applied in memory must reach the store."""
        self._pending.append(_Entry(room, update, time.monotonic()))
        self._pending_bytes += len(update)
        self._appended += 1
        # The pending gauges are set by the commit loop, once per window: this runs for every update, and a
        # prometheus gauge takes a lock (4 % of the networking process at 1,000 busy rooms).
        self._wakeup.set()

    def pending_for(self, room: str) -> list[bytes]:
        """``room``'s updates queued and not yet committed, oldest first (a CRDT worker that restarts
        rebuilds the room from the store plus these). A scan of the queue: rare, and the queue is short
        unless the store is down."""
        return [entry.update for entry in self._pending if entry.room == room and not entry.committed]

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed; StoreUnavailable after ``timeout``."""
        target = self._appended
        if self._committed >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"{target - self._committed} updates still waiting for the store after {timeout}s"
            ) from None

    async def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued (waiting up to ``timeout``), then stop."""
        try:
            if self._task is not None and not self._task.done():
                await self.flush(timeout)
        finally:
            if self._task is not None:
                self._task.cancel()
                for commit in self._commits:
                    commit.cancel()
                await asyncio.gather(self._task, *self._commits, return_exceptions=True)
                self._task = None
            if self._pending:
                logger.error("store writer stopped with %d updates not committed", len(self._pending))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._window > 0:
                # The group-commit window: edits arriving meanwhile share this transaction.
                await asyncio.sleep(self._window)
            self._report_pending()
            while self._sent < len(self._pending):
                await self._slots.acquire()
                end = min(self._sent + self._batch, len(self._pending))
                batch = [self._pending[i] for i in range(self._sent, end)]
                self._sent = end
                task = asyncio.get_running_loop().create_task(self._commit(batch))
                self._commits.add(task)
                task.add_done_callback(self._commits.discard)

    def _report_pending(self) -> None:
        metrics.STORE_PENDING_UPDATES.set(len(self._pending))
        metrics.STORE_PENDING_BYTES.set(self._pending_bytes)

    async def _commit(self, batch: list[_Entry]) -> None:
        """Write one batch, retrying with backoff until it is in; holds one in-flight slot meanwhile."""
        backoff = 0.05
        try:
            while True:
                try:
                    await self._store.append_many([(e.room, e.update) for e in batch])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._on_failure(exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                self._on_commit(batch)
                return
        finally:
            self._slots.release()

    def _on_commit(self, batch: list[_Entry]) -> None:
        now = time.monotonic()
        for entry in batch:
            entry.committed = True
            metrics.STORE_COMMIT_SECONDS.observe(now - entry.queued_at)
        metrics.STORE_BATCH_SIZE.observe(len(batch))
        # Only a committed *prefix* leaves the queue: flush() promises everything before its call.
        pending = self._pending
        while pending and pending[0].committed:
            entry = pending.popleft()
            self._pending_bytes -= len(entry.update)
            self._sent -= 1
            self._committed += 1
        self._report_pending()
        if not self.healthy:
            logger.info("store is writable again; %d updates still queued", len(self._pending))
        self.healthy = True
        still_waiting = []
        for target, future in self._waiters:
            if self._committed >= target:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((target, future))
        self._waiters = still_waiting

    def _on_failure(self, exc: Exception, backoff: float) -> None:
        metrics.STORE_ERRORS.labels("append").inc()
        self._report_pending()  # the commit loop waits for this batch meanwhile: report from its retries
        self.healthy = False
        now = time.monotonic()
        if now - self._last_behind_log >= _BEHIND_LOG_EVERY:
            self._last_behind_log = now
            oldest = now - self._pending[0].queued_at if self._pending else 0.0
            logger.warning(
                "store append failed (%s); %d updates (%d bytes) queued, oldest %.1fs; retrying in %.2fs",
                exc,
                len(self._pending),
                self._pending_bytes,
                oldest,
                backoff,
            )
