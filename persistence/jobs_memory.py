"""In-memory JobStore: the reference implementation of the contract (and ``memory://``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

from persistence.jobs import LEASE_EXPIRED, Job, JobStatus, NewJob


class MemoryJobStore:
    """Jobs in a dict; every method runs without awaiting, so each is atomic on the event loop."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._wake = asyncio.Event()

    def describe(self) -> str:
        return "memory (jobs are lost on restart)"

    async def enqueue(self, job: NewJob) -> Job:
        now = time.time()
        stored = Job(
            id=job.id, room=job.room, format=job.format, options=dict(job.options), status=JobStatus.PENDING,
            attempts=0, max_attempts=job.max_attempts, created_at=now, run_after=now,
            requested_by=job.requested_by,
        )
        self._jobs[job.id] = stored
        self._wake.set()
        return stored

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def list_room(self, room: str, *, limit: int = 20) -> list[Job]:
        jobs = [job for job in self._jobs.values() if job.room == room]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)[:limit]

    async def claim(self, worker_id: str, *, lease: float) -> Job | None:
        now = time.time()
        for job in list(self._jobs.values()):
            if _lease_ran_out(job, now) and job.attempts >= job.max_attempts:
                self._jobs[job.id] = _failed(job, f"{LEASE_EXPIRED}: the worker stopped renewing its lease "
                                                  f"after {job.attempts} attempts", now)
        runnable = [
            job for job in self._jobs.values()
            if (job.status is JobStatus.PENDING and job.run_after <= now) or _lease_ran_out(job, now)
        ]
        if not runnable:
            return None
        job = min(runnable, key=lambda job: job.created_at)
        claimed = dataclasses.replace(
            job, status=JobStatus.PROCESSING, attempts=job.attempts + 1, worker_id=worker_id,
            lease_expires_at=now + lease, started_at=now,
        )
        self._jobs[job.id] = claimed
        return claimed

    def _held(self, job_id: str, worker_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.PROCESSING or job.worker_id != worker_id:
            return None
        return job

    async def heartbeat(self, job_id: str, worker_id: str, *, lease: float) -> bool:
        job = self._held(job_id, worker_id)
        if job is None:
            return False
        self._jobs[job_id] = dataclasses.replace(job, lease_expires_at=time.time() + lease)
        return True

    async def complete(self, job_id: str, worker_id: str, *, result_key: str, result: dict[str, Any]) -> bool:
        job = self._held(job_id, worker_id)
        if job is None:
            return False
        self._jobs[job_id] = dataclasses.replace(
            job, status=JobStatus.COMPLETED, result_key=result_key, result=dict(result), error=None,
            lease_expires_at=None, completed_at=time.time(),
        )
        return True

    async def fail(self, job_id: str, worker_id: str, *, error: str, retry_in: float | None) -> bool:
        job = self._held(job_id, worker_id)
        if job is None:
            return False
        now = time.time()
        if retry_in is None:
            self._jobs[job_id] = _failed(job, error, now)
        else:
            self._jobs[job_id] = dataclasses.replace(
                job, status=JobStatus.PENDING, error=error, worker_id=None, lease_expires_at=None,
                run_after=now + retry_in,
            )
        return True

    async def fail_room(self, room: str, *, error: str) -> int:
        now = time.time()
        doomed = [job for job in self._jobs.values() if job.room == room and not job.finished]
        for job in doomed:
            self._jobs[job.id] = _failed(job, error, now)
        return len(doomed)

    async def depth(self) -> int:
        return sum(job.status is JobStatus.PENDING for job in self._jobs.values())

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def close(self) -> None:
        pass


def _lease_ran_out(job: Job, now: float) -> bool:
    return job.status is JobStatus.PROCESSING and job.lease_expires_at is not None and job.lease_expires_at <= now


def _failed(job: Job, error: str, now: float) -> Job:
    return dataclasses.replace(
        job, status=JobStatus.FAILED, error=error, worker_id=None, lease_expires_at=None, completed_at=now
    )
