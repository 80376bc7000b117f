"""The export worker: claims jobs, renders them, stores the files, records the outcome.

One attempt: claim (attempts + 1, a lease) → load the room's stored document → decode it into a Board
in a child process (exports.decode) → build the ``.tldr`` JSON, or render with the Renderer → put the file
in the blob store → complete. While it runs, a heartbeat renews the lease every third of it; if a renewal
finds the job taken (our lease ran out and another worker claimed it), the attempt is abandoned.

A failed attempt ends in ``fail``: a retryable error (a timeout, a browser crash, the store unreachable)
puts the job back to pending after a backoff that doubles per attempt, until ``max_attempts``; a
permanent one (renderer unavailable, room gone, broken board) fails it at once with its reason.

A worker that is killed simply stops renewing: its job's lease runs out and the next claim retries it.
Cancelling ``run`` behaves the same way on purpose (no release on the way out), so a test can kill a
worker by cancelling it. ``run(burst=True)`` returns once nothing is claimable: deterministic tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from collab_server import metrics
from collab_server.documents import DEFAULT_LIMITS, DocumentLimits
from collab_server.errors import StoreError
from exports.blobs import BlobStore, blob_key, filename_of
from exports.decode import Decoder
from exports.errors import JobError, RenderFailed, RenderTimeout, RoomGone
from exports.options import ExportFormat, parse_options
from exports.renderer import Renderer
from exports.tldr import tldr_file
from persistence.base import DocumentStore
from persistence.jobs import Job, JobStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    worker_id: str
    lease: float = 30.0
    job_timeout: float = 120.0
    backoff: float = 5.0
    poll_interval: float = 5.0
    concurrency: int = 1
    # the document REST endpoint's bounds: a non-tldraw room's JSON export is that endpoint's view
    limits: DocumentLimits = field(default_factory=lambda: DEFAULT_LIMITS)
    niceness: int = 10  # of the decode children (exports.priority; 19: the idle class)


class LeaseLost(Exception):
    """Another worker holds our job now: drop the attempt without recording anything."""


class Worker:
    """Runs export jobs from ``jobs`` (see the module docstring)."""

    def __init__(
        self, jobs: JobStore, documents: DocumentStore, blobs: BlobStore, renderer: Renderer, config: WorkerConfig
    ) -> None:
        self.jobs = jobs
        self.documents = documents
        self.blobs = blobs
        self.renderer = renderer
        self.config = config
        self._stopping = asyncio.Event()
        self.processed = 0
        self.decoder = Decoder(timeout=max(1.0, config.job_timeout / 2), niceness=config.niceness, limits=config.limits)

    def stop(self) -> None:
        """Claim nothing more; ``run`` returns when the jobs in hand are done."""
        self._stopping.set()

    async def wait_stopping(self) -> None:
        await self._stopping.wait()

    async def run(self, *, burst: bool = False) -> int:
        """Work until ``stop`` (or, with ``burst``, until nothing is claimable); returns jobs processed."""
        try:
            async with asyncio.TaskGroup() as group:
                for slot in range(self.config.concurrency):
                    group.create_task(self._loop(slot, burst))
        finally:
            await self.decoder.close()  # the decode child kept in reserve
        return self.processed

    async def _loop(self, slot: int, burst: bool) -> None:
        while not self._stopping.is_set():
            try:
                job = await self.jobs.claim(self.config.worker_id, lease=self.config.lease)
            except StoreError as exc:
                logger.warning("export worker %s: cannot claim (%s)", self.config.worker_id, exc)
                job = None
                if burst:
                    raise
            if job is not None:
                await self.process(job)
            # the queue's depth after the job, not before it: one round trip less between claim and render
            with contextlib.suppress(StoreError):
                metrics.EXPORT_QUEUE_DEPTH.set(await self.jobs.depth())
            if job is None:
                if burst:
                    return
                await self._idle()

    async def _idle(self) -> None:
        waiter = asyncio.ensure_future(self.jobs.wait(self.config.poll_interval))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopping):
                task.cancel()
            await asyncio.gather(waiter, stopping, return_exceptions=True)

    async def process(self, job: Job) -> None:
        """One attempt at a claimed job, recorded in the store (unless the lease was lost)."""
        log_extra = {"room": job.room, "job": job.id}
        attempt = asyncio.current_task()
        assert attempt is not None
        heartbeat = asyncio.create_task(self._heartbeat(job, attempt))
        try:
            async with asyncio.timeout(self.config.job_timeout):
                key, result = await self._produce(job)
        except asyncio.CancelledError:
            if heartbeat.done() and not heartbeat.cancelled() and isinstance(heartbeat.exception(), LeaseLost):
                # uncancel so the loop goes on: only this attempt was abandoned, the worker was not killed
                attempt.uncancel()
                logger.warning("export %s: lease lost to another worker; attempt dropped", job.id, extra=log_extra)
                return
            raise
        except TimeoutError:
            await self._failed(job, RenderTimeout(f"the attempt took longer than {self.config.job_timeout:g} s"))
            return
        except JobError as exc:
            await self._failed(job, exc)
            return
        except StoreError as exc:
            await self._failed(job, RenderFailed(f"the document store failed: {exc}"))
            return
        except Exception as exc:
            logger.exception("export %s: unexpected failure", job.id, extra=log_extra)
            await self._failed(job, RenderFailed(f"{type(exc).__name__}: {exc}"))
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await heartbeat
        self.processed += 1
        if await self.jobs.complete(job.id, self.config.worker_id, result_key=key, result=result):
            metrics.EXPORT_JOBS.labels("completed").inc()
            logger.info("export %s (%s) completed", job.id, job.format, extra=log_extra)

    async def _produce(self, job: Job) -> tuple[str, dict[str, object]]:
        fmt = ExportFormat(job.format)
        options = parse_options(job.options)
        # where the attempt's time went, in the job's result (docs/benchmarks.md reads it)
        stages: dict[str, int] = {}
        if job.started_at is not None:
            stages["queued"] = round((job.started_at - job.created_at) * 1000)
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            stages[stage] = round((now - clock) * 1000)
            clock = now

        stored = await self.documents.load(job.room)
        if stored is None:
            raise RoomGone(f"room {job.room!r} has no document (deleted, or never written)")
        lap("load")
        board = await self.decoder.decode(job.room, stored.snapshot, stored.updates)
        lap("decode")
        content_type, extension = fmt.content_type, fmt.extension
        details: dict[str, object]
        if fmt is ExportFormat.JSON:
            data, details = tldr_file(board), {"records": len(board.records)}
            if not board.is_tldraw:  # the document's JSON view, not a .tldr file
                content_type, extension, details = "application/json", "json", {"layout": "document"}
        else:
            rendered = await self.renderer.render(board, fmt, options)
            data, details = rendered.data, rendered.details
        lap("render")
        key = blob_key(job.room, job.id, extension)
        await self.blobs.put(key, data, content_type=content_type, filename=filename_of(key))
        lap("upload")
        return key, {"content_type": content_type, "size": len(data), **details, "stages_ms": stages}

    async def _failed(self, job: Job, error: JobError) -> None:
        self.processed += 1
        retry = error.retryable and job.attempts < job.max_attempts
        retry_in = self.config.backoff * 2 ** (job.attempts - 1) if retry else None
        if await self.jobs.fail(job.id, self.config.worker_id, error=error.record(), retry_in=retry_in):
            metrics.EXPORT_JOBS.labels("retried" if retry else "failed").inc()
            logger.warning(
                "export %s attempt %d/%d failed%s: %s",
                job.id,
                job.attempts,
                job.max_attempts,
                f"; retry in {retry_in:g} s" if retry_in is not None else "",
                error.record(),
                extra={"room": job.room, "job": job.id},
            )

    async def _heartbeat(self, job: Job, attempt: asyncio.Task[object]) -> None:
        while True:
            await asyncio.sleep(self.config.lease / 3)
            try:
                held = await self.jobs.heartbeat(job.id, self.config.worker_id, lease=self.config.lease)
            except StoreError:
                continue  # the lease may still hold; the next beat tries again
            if not held:
                attempt.cancel()
                raise LeaseLost(job.id)
