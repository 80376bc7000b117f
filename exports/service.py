"""ExportService: what the REST API asks of exports (request, status, list), free of HTTP types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from collab_server import metrics
from exports.blobs import BlobStore
from exports.errors import ExportNotFound, InvalidExportRequest, split_error
from exports.options import parse_format, parse_options
from persistence.jobs import Job, JobStatus, JobStore, NewJob

ROOM_DELETED = "room_not_found: the room was deleted before its export ran"


class ExportService:
    """Validates requests into jobs and shows jobs with a freshly minted download URL."""

    def __init__(self, jobs: JobStore, blobs: BlobStore, *, max_attempts: int = 3, url_ttl: int = 3600) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self._max_attempts = max_attempts
        self._url_ttl = url_ttl

    async def request(self, room: str, body: Any, *, requested_by: str | None = None) -> Job:
        """A pending job for ``{"format": ..., "options": {...}}``; InvalidExportRequest if the body is bad."""
        if not isinstance(body, dict):
            raise InvalidExportRequest('the body must be an object: {"format": "png", "options": {...}}')
        fmt = parse_format(body.get("format"))
        options = parse_options(body.get("options"))
        job = await self.jobs.enqueue(
            NewJob(room, fmt.value, options.to_dict(), max_attempts=self._max_attempts, requested_by=requested_by)
        )
        metrics.EXPORT_JOBS.labels("requested").inc()
        metrics.EXPORT_QUEUE_DEPTH.set(await self.jobs.depth())
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.jobs.get(job_id)
        if job is None:
            raise ExportNotFound(f"no export {job_id!r}")
        return job

    async def list(self, room: str, *, limit: int = 20) -> list[Job]:
        return await self.jobs.list_room(room, limit=limit)

    async def room_deleted(self, room: str) -> int:
        """Fail the room's unfinished exports; the access layer calls this when it deletes a room."""
        return await self.jobs.fail_room(room, error=ROOM_DELETED)

    async def describe(self, job: Job) -> dict[str, Any]:
        """The job as the REST API shows it; ``url`` is minted now, for ``url_ttl`` seconds."""
        url = None
        if job.status is JobStatus.COMPLETED and job.result_key is not None:
            url = await self.blobs.url(job.result_key, expires_in=self._url_ttl)
        return {
            "id": job.id,
            "room": job.room,
            "format": job.format,
            "options": job.options,
            "status": job.status.value,
            "error": split_error(job.error) if job.status is JobStatus.FAILED else None,
            "last_error": split_error(job.error) if job.status is not JobStatus.FAILED else None,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at),
            "completed_at": _iso(job.completed_at),
            "url": url,
            "url_expires_in": self._url_ttl if url else None,
            "result": job.result or None,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
