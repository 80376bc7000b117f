"""SQLite JobStore: the embedded default, in the same file as the documents.

Correctness of ``claim`` across processes (a server and a ``collab-server worker`` on one file): the
whole claim runs in ``BEGIN IMMEDIATE``, which takes SQLite's single write lock before reading, so two
claimers are serialised and the second sees the first's row as ``processing``. Within it, one
``UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING *`` picks and takes the job. SQLite has no
notifications: another process's new job is seen at the worker's next poll; jobs enqueued by this
process wake its own workers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from collab_server.errors import StoreUnavailable
from persistence import migrate as migrations
from persistence.jobs import LEASE_EXPIRED, Job, JobStatus, NewJob
from persistence.sqlite_schema import SQLiteSchema

T = TypeVar("T")

_COLUMNS = (
    "id, room_id, format, options, status, attempts, max_attempts, run_after, worker_id, lease_expires_at, "
    "error, result_key, result, requested_by, created_at, started_at, completed_at"
)
_EXPIRE = """
UPDATE exports SET status = 'failed', error = ?, worker_id = NULL, lease_expires_at = NULL, completed_at = ?
WHERE status = 'processing' AND lease_expires_at <= ? AND attempts >= max_attempts
"""
_CLAIM = f"""
UPDATE exports SET status = 'processing', attempts = attempts + 1, worker_id = ?, lease_expires_at = ?,
                   started_at = ?
WHERE id = (
    SELECT id FROM exports
    WHERE (status = 'pending' AND run_after <= ?) OR (status = 'processing' AND lease_expires_at <= ?)
    ORDER BY created_at LIMIT 1
)
RETURNING {_COLUMNS}
"""
_HELD = "id = ? AND worker_id = ? AND status = 'processing'"


def _job(row: tuple[Any, ...]) -> Job:
    (id_, room, fmt, options, status, attempts, max_attempts, run_after, worker_id, lease, error, result_key,
     result, requested_by, created_at, started_at, completed_at) = row
    return Job(
        id=id_, room=room, format=fmt, options=json.loads(options), status=JobStatus(status), attempts=attempts,
        max_attempts=max_attempts, created_at=created_at, run_after=run_after, error=error, result_key=result_key,
        result=json.loads(result), worker_id=worker_id, lease_expires_at=lease, requested_by=requested_by,
        started_at=started_at, completed_at=completed_at,
    )


class SQLiteJobStore:
    """JobStore on a SQLite file (``sqlite:///path``); statements run on one dedicated thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-jobs")
        self._conn: sqlite3.Connection | None = None
        self._wake = asyncio.Event()

    def describe(self) -> str:
        return f"sqlite file {self.path.resolve()}"

    async def open(self) -> SQLiteJobStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        try:
            # The same runner as the document store: whichever opens the file first applies the files.
            asyncio.run(migrations.migrate(SQLiteSchema(conn), migrations.load_migrations("sqlite")))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite jobs {self.path}: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("sqlite job store is not open")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
            db.execute("COMMIT")
            return result
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def enqueue(self, job: NewJob) -> Job:
        now = time.time()
        row = (job.id, job.room, job.format, json.dumps(job.options), job.max_attempts, now, job.requested_by, now)

        def insert(db: sqlite3.Connection) -> Job:
            db.execute(
                "INSERT INTO exports (id, room_id, format, options, max_attempts, run_after, requested_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return _job(db.execute(f"SELECT {_COLUMNS} FROM exports WHERE id = ?", (job.id,)).fetchone())

        stored = await self._run(lambda: self._write(insert))
        self._wake.set()
        return stored

    async def get(self, job_id: str) -> Job | None:
        row = await self._run(lambda: self._db.execute(f"SELECT {_COLUMNS} FROM exports WHERE id = ?", (job_id,))
                              .fetchone())
        return None if row is None else _job(row)

    async def list_room(self, room: str, *, limit: int = 20) -> list[Job]:
        rows = await self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM exports WHERE room_id = ? ORDER BY created_at DESC LIMIT ?", (room, limit)
        ).fetchall())
        return [_job(row) for row in rows]

    async def claim(self, worker_id: str, *, lease: float) -> Job | None:
        def claim(db: sqlite3.Connection) -> Job | None:
            now = time.time()
            db.execute(_EXPIRE, (f"{LEASE_EXPIRED}: the worker stopped renewing its lease", now, now))
            row = db.execute(_CLAIM, (worker_id, now + lease, now, now, now)).fetchone()
            return None if row is None else _job(row)

        return await self._run(lambda: self._write(claim))

    async def _update_held(self, job_id: str, worker_id: str, assignments: str, values: tuple[Any, ...]) -> bool:
        sql = f"UPDATE exports SET {assignments} WHERE {_HELD}"
        changed = await self._run(lambda: self._write(lambda db: db.execute(sql, (*values, job_id, worker_id))
                                                      .rowcount))
        return changed == 1

    async def heartbeat(self, job_id: str, worker_id: str, *, lease: float) -> bool:
        return await self._update_held(job_id, worker_id, "lease_expires_at = ?", (time.time() + lease,))

    async def complete(self, job_id: str, worker_id: str, *, result_key: str, result: dict[str, Any]) -> bool:
        return await self._update_held(
            job_id, worker_id,
            "status = 'completed', result_key = ?, result = ?, error = NULL, lease_expires_at = NULL, "
            "completed_at = ?",
            (result_key, json.dumps(result), time.time()),
        )

    async def fail(self, job_id: str, worker_id: str, *, error: str, retry_in: float | None) -> bool:
        now = time.time()
        if retry_in is None:
            return await self._update_held(
                job_id, worker_id,
                "status = 'failed', error = ?, worker_id = NULL, lease_expires_at = NULL, completed_at = ?",
                (error, now),
            )
        done = await self._update_held(
            job_id, worker_id,
            "status = 'pending', error = ?, worker_id = NULL, lease_expires_at = NULL, run_after = ?",
            (error, now + retry_in),
        )
        self._wake.set()
        return done

    async def fail_room(self, room: str, *, error: str) -> int:
        sql = (
            "UPDATE exports SET status = 'failed', error = ?, worker_id = NULL, lease_expires_at = NULL, "
            "completed_at = ? WHERE room_id = ? AND status IN ('pending', 'processing')"
        )
        return await self._run(lambda: self._write(lambda db: db.execute(sql, (error, time.time(), room)).rowcount))

    async def depth(self) -> int:
        row = await self._run(lambda: self._db.execute("SELECT count(*) FROM exports WHERE status = 'pending'")
                              .fetchone())
        return int(row[0])

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)
