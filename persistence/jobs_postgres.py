"""PostgreSQL JobStore: workers on many hosts claim from the ``exports`` table.

- Claim: ``SELECT … FOR UPDATE SKIP LOCKED`` picks the oldest runnable row that no other transaction has
  locked, and the UPDATE in the same transaction takes it: two workers never get one job, and neither
  waits on the other. Leases use the database's clock (``now()``), so workers' clocks may disagree.
- Wake-up: an insert fires ``pg_notify('collab_exports')`` (trigger of migration 0006); ``wait`` listens
  on a connection of its own and returns at the first notification, else after its timeout (which covers
  a retry's backoff and lost notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import asyncpg

from collab_server.secrets import redact_url
from persistence.jobs import LEASE_EXPIRED, Job, JobStatus, NewJob
from persistence.postgres_errors import translate_errors
from persistence.postgres_schema import prepare_schema

CHANNEL = "collab_exports"

_COLUMNS = """
id::text, room_id, format, options::text, status, attempts, max_attempts, extract(epoch FROM run_after)::float8,
worker_id, extract(epoch FROM lease_expires_at)::float8, error, result_key, result::text, requested_by,
extract(epoch FROM created_at)::float8, extract(epoch FROM started_at)::float8,
extract(epoch FROM completed_at)::float8
"""
_EXPIRE = """
UPDATE exports SET status = 'failed', error = $1, worker_id = NULL, lease_expires_at = NULL, completed_at = now(),
                   updated_at = now()
WHERE status = 'processing' AND lease_expires_at <= now() AND attempts >= max_attempts
"""
_CLAIM = f"""
WITH next AS (
    SELECT id FROM exports
    WHERE (status = 'pending' AND run_after <= now()) OR (status = 'processing' AND lease_expires_at <= now())
    ORDER BY created_at LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE exports AS e SET status = 'processing', attempts = e.attempts + 1, worker_id = $1,
       lease_expires_at = now() + make_interval(secs => $2), started_at = now(), updated_at = now()
FROM next WHERE e.id = next.id
RETURNING {_COLUMNS.replace("id::text", "e.id::text")}
"""
_HELD = "id = $1::uuid AND worker_id = $2 AND status = 'processing'"


def _job(row: asyncpg.Record) -> Job:
    (id_, room, fmt, options, status, attempts, max_attempts, run_after, worker_id, lease, error, result_key,
     result, requested_by, created_at, started_at, completed_at) = tuple(row)
    return Job(
        id=id_, room=room, format=fmt, options=json.loads(options), status=JobStatus(status), attempts=attempts,
        max_attempts=max_attempts, created_at=created_at, run_after=run_after, error=error, result_key=result_key,
        result=json.loads(result), worker_id=worker_id, lease_expires_at=lease, requested_by=requested_by,
        started_at=started_at, completed_at=completed_at,
    )


class PostgresJobStore:
    """JobStore on PostgreSQL. Open it with :meth:`connect` (applies pending migrations)."""

    def __init__(self, pool: asyncpg.Pool, url: str, timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()

    def describe(self) -> str:
        return f"postgresql {redact_url(self._url)} (LISTEN {CHANNEL})"

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = 2, timeout: float = 10.0,
                      auto_migrate: bool = True) -> PostgresJobStore:
        if auto_migrate:
            await prepare_schema(url, timeout=timeout)
        async with translate_errors("connect"):
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, timeout=timeout,
                                             command_timeout=timeout)
        return cls(pool, url, timeout)

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        async with translate_errors("listen"):
            self._listener = await asyncpg.connect(self._url, timeout=self._timeout)
            await self._listener.add_listener(CHANNEL, self._notified)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def enqueue(self, job: NewJob) -> Job:
        async with translate_errors("enqueue", job.room):
            row = await self._pool.fetchrow(
                f"INSERT INTO exports (id, room_id, format, options, max_attempts, requested_by) "
                f"VALUES ($1::uuid, $2, $3, $4::jsonb, $5, $6) RETURNING {_COLUMNS}",
                job.id, job.room, job.format, json.dumps(job.options), job.max_attempts, job.requested_by,
            )
        return _job(row)

    async def get(self, job_id: str) -> Job | None:
        try:
            uuid.UUID(job_id)
        except ValueError:  # not an id this store ever handed out: no job, rather than a database error
            return None
        async with translate_errors("get"):
            row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM exports WHERE id = $1::uuid", job_id)
        return None if row is None else _job(row)

    async def list_room(self, room: str, *, limit: int = 20) -> list[Job]:
        async with translate_errors("list", room):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM exports WHERE room_id = $1 ORDER BY created_at DESC LIMIT $2", room, limit
            )
        return [_job(row) for row in rows]

    async def claim(self, worker_id: str, *, lease: float) -> Job | None:
        async with translate_errors("claim"), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_EXPIRE, f"{LEASE_EXPIRED}: the worker stopped renewing its lease")
            row = await conn.fetchrow(_CLAIM, worker_id, float(lease))
        return None if row is None else _job(row)

    async def _update_held(self, job_id: str, worker_id: str, assignments: str, *values: Any) -> bool:
        sql = f"UPDATE exports SET {assignments}, updated_at = now() WHERE {_HELD}"
        async with translate_errors("update"):
            status = await self._pool.execute(sql, job_id, worker_id, *values)
        return bool(status.endswith(" 1"))

    async def heartbeat(self, job_id: str, worker_id: str, *, lease: float) -> bool:
        return await self._update_held(job_id, worker_id, "lease_expires_at = now() + make_interval(secs => $3)",
                                       float(lease))

    async def complete(self, job_id: str, worker_id: str, *, result_key: str, result: dict[str, Any]) -> bool:
        return await self._update_held(
            job_id, worker_id,
            "status = 'completed', result_key = $3, result = $4::jsonb, error = NULL, lease_expires_at = NULL, "
            "completed_at = now()",
            result_key, json.dumps(result),
        )

    async def fail(self, job_id: str, worker_id: str, *, error: str, retry_in: float | None) -> bool:
        if retry_in is None:
            return await self._update_held(
                job_id, worker_id,
                "status = 'failed', error = $3, worker_id = NULL, lease_expires_at = NULL, completed_at = now()",
                error,
            )
        return await self._update_held(
            job_id, worker_id,
            "status = 'pending', error = $3, worker_id = NULL, lease_expires_at = NULL, "
            "run_after = now() + make_interval(secs => $4)",
            error, float(retry_in),
        )

    async def fail_room(self, room: str, *, error: str) -> int:
        async with translate_errors("fail_room", room):
            status = await self._pool.execute(
                "UPDATE exports SET status = 'failed', error = $2, worker_id = NULL, lease_expires_at = NULL, "
                "completed_at = now(), updated_at = now() WHERE room_id = $1 AND status IN ('pending', 'processing')",
                room, error,
            )
        return int(status.split()[-1])

    async def depth(self) -> int:
        async with translate_errors("depth"):
            return int(await self._pool.fetchval("SELECT count(*) FROM exports WHERE status = 'pending'"))

    async def wait(self, timeout: float) -> None:
        # Listen before the caller's next claim can miss an insert: a notification that arrives between
        # a claim that found nothing and this wait still sets the event.
        with contextlib.suppress(Exception):
            await self._listen()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        await self._pool.close()
