"""Build the export pieces from Settings: job store, blob store, service, renderer and (embedded) worker.

``open_exports`` is what the server's lifespan calls; ``collab-server worker`` builds the same pieces
and runs the worker in the foreground (exports.command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from collab_server.room_documents import document_limits
from collab_server.secrets import Secret
from collab_server.settings import Settings
from exports.blob_factory import open_blob_store
from exports.blobs import BlobStore
from exports.renderer import BUNDLE_DIR, Renderer
from exports.service import ExportService
from exports.worker import Worker, WorkerConfig
from persistence.base import DocumentStore
from persistence.jobs import JobStore
from persistence.jobs_factory import open_job_store

logger = logging.getLogger(__name__)


def signing_key(settings: Settings) -> Secret:
    if settings.blob_signing_key:
        return settings.blob_signing_key
    logger.warning(
        "COLLAB_BLOB_SIGNING_KEY is not set: download links are signed with a random key and stop "
        "working when this process restarts"
    )
    return Secret(secrets.token_urlsafe(32))


def open_blobs(settings: Settings) -> BlobStore:
    return open_blob_store(
        settings.blob_url,
        signing_key=signing_key(settings),
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
        s3_path_style=settings.s3_path_style,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key,
    )


def browser_renderer(settings: Settings) -> Renderer:
    from exports.browser import BrowserRenderer

    return BrowserRenderer(
        executable=settings.export_chromium,
        bundle_dir=Path(settings.export_renderer_dir or BUNDLE_DIR),
        license_key=settings.tldraw_license_key.reveal(),
        timeout=settings.export_job_timeout,
        restart_after=settings.export_browser_restart_jobs,
        raster_above=settings.export_raster_above,
        niceness=settings.export_nice,
        pages=settings.export_concurrency,
    )


def worker_config(settings: Settings, worker_id: str) -> WorkerConfig:
    return WorkerConfig(
        worker_id=worker_id,
        lease=settings.export_lease,
        job_timeout=settings.export_job_timeout,
        backoff=settings.export_retry_backoff,
        poll_interval=settings.export_poll_interval,
        concurrency=settings.export_concurrency,
        limits=document_limits(settings),
        niceness=settings.export_nice,
    )


@dataclass
class Exports:
    """The server's export pieces; ``close`` stops the worker (its job's lease then runs out) and closes."""

    jobs: JobStore
    blobs: BlobStore
    service: ExportService
    renderer: Renderer | None = None
    worker: Worker | None = None
    _task: asyncio.Task[int] | None = field(default=None, repr=False)

    async def close(self, timeout: float = 10.0) -> None:
        if self.worker is not None and self._task is not None:
            self.worker.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.renderer is not None:
            await self.renderer.close()
        await self.blobs.close()
        await self.jobs.close()


async def open_exports(settings: Settings, documents: DocumentStore, *, renderer: Renderer | None = None) -> Exports:
    """Job store on the documents' database, blob store, service; and the in-process worker when
    ``COLLAB_EXPORT_WORKER`` is on (Chromium starts at its first SVG/PNG/PDF job, not now)."""
    jobs = await open_job_store(
        settings.database_url.reveal(), auto_migrate=settings.auto_migrate, timeout=settings.database_timeout
    )
    blobs = open_blobs(settings)
    service = ExportService(jobs, blobs, max_attempts=settings.export_max_attempts, url_ttl=settings.blob_url_ttl)
    exports = Exports(jobs, blobs, service)
    logger.info("exports: jobs in %s, files in %s", jobs.describe(), blobs.describe())
    if settings.export_worker:
        exports.renderer = renderer or browser_renderer(settings)
        exports.worker = Worker(
            jobs, documents, blobs, exports.renderer, worker_config(settings, f"{settings.replica_id}-exports")
        )
        exports._task = asyncio.create_task(exports.worker.run(), name="export-worker")
        logger.info("exports: worker running in this process (COLLAB_EXPORT_WORKER=off to run it apart)")
    return exports
