"""The JobStore contract: one body, run against every backend (memory, sqlite, postgres)."""

from __future__ import annotations

import asyncio

from persistence.jobs import LEASE_EXPIRED, Job, JobStatus, JobStore, NewJob
from persistence.jobs_sqlite import SQLiteJobStore
from tests.contract.conftest_jobs import Opener
from tests.support.eventually import eventually


async def test_enqueue_get_and_list(open_jobs: Opener, room_name: str) -> None:
    jobs = await open_jobs()
    first = await jobs.enqueue(NewJob(room_name, "png", {"scale": 2}, requested_by="ada"))
    second = await jobs.enqueue(NewJob(room_name, "svg"))
    await jobs.enqueue(NewJob(room_name + "-other", "svg"))
    got = await jobs.get(first.id)
    assert got is not None
    assert (got.room, got.format, got.options, got.status, got.attempts) == (room_name, "png", {"scale": 2},
                                                                            JobStatus.PENDING, 0)
    assert got.requested_by == "ada"
    assert [job.id for job in await jobs.list_room(room_name)] == [second.id, first.id]
    assert await jobs.get("no-such-job") is None
    assert await jobs.depth() == 3


async def test_two_workers_racing_for_one_job_get_it_once(open_jobs: Opener, room_name: str) -> None:
    a, b = await open_jobs(), await open_jobs()
    job = await a.enqueue(NewJob(room_name, "json"))
    claims = await asyncio.gather(*(store.claim(f"w{i}", lease=30) for i, store in enumerate([a, b, a, b])))
    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    assert winners[0].id == job.id and winners[0].attempts == 1 and winners[0].status is JobStatus.PROCESSING
    assert await a.depth() == 0


async def test_completion_is_only_for_the_worker_holding_the_lease(open_jobs: Opener, room_name: str) -> None:
    jobs = await open_jobs()
    job = await jobs.enqueue(NewJob(room_name, "json"))
    claimed = await jobs.claim("w1", lease=30)
    assert claimed is not None
    assert not await jobs.complete(job.id, "w2", result_key="k", result={})
    assert not await jobs.heartbeat(job.id, "w2", lease=30)
    assert await jobs.heartbeat(job.id, "w1", lease=30)
    assert await jobs.complete(job.id, "w1", result_key="exports/r/j/board.json", result={"size": 3})
    done = await jobs.get(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.result == {"size": 3}
    assert done.completed_at is not None and done.started_at is not None
    assert await jobs.claim("w1", lease=30) is None


async def test_an_expired_lease_is_claimed_again_and_the_old_worker_loses_it(open_jobs: Opener,
                                                                             room_name: str) -> None:
    jobs = await open_jobs()
    job = await jobs.enqueue(NewJob(room_name, "png"))
    assert await jobs.claim("dead", lease=0) is not None  # the worker dies: its lease is never renewed
    again = await eventually(lambda: _claimed(jobs, "alive"))
    assert again.id == job.id and again.attempts == 2
    assert not await jobs.complete(job.id, "dead", result_key="k", result={})
    assert await jobs.complete(job.id, "alive", result_key="k", result={})


async def _claimed(jobs: JobStore, worker: str) -> Job:
    job = await jobs.claim(worker, lease=30)
    assert job is not None
    return job


async def test_a_lease_that_runs_out_on_the_last_attempt_fails_the_job(open_jobs: Opener, room_name: str) -> None:
    jobs = await open_jobs()
    job = await jobs.enqueue(NewJob(room_name, "png", max_attempts=1))
    assert await jobs.claim("dead", lease=0) is not None

    async def failed() -> None:
        assert await jobs.claim("other", lease=30) is None
        got = await jobs.get(job.id)
        assert got is not None and got.status is JobStatus.FAILED

    await eventually(failed)
    got = await jobs.get(job.id)
    assert got is not None and got.error is not None and got.error.startswith(LEASE_EXPIRED)


async def test_a_retried_job_waits_out_its_backoff(open_jobs: Opener, room_name: str) -> None:
    jobs = await open_jobs()
    job = await jobs.enqueue(NewJob(room_name, "svg"))
    assert await jobs.claim("w", lease=30) is not None
    assert await jobs.fail(job.id, "w", error="render_failed: boom", retry_in=3600)
    assert await jobs.claim("w", lease=30) is None  # not due for an hour
    got = await jobs.get(job.id)
    assert got is not None and got.status is JobStatus.PENDING and got.error == "render_failed: boom"
    assert await jobs.depth() == 1


async def test_a_failed_job_keeps_its_reason(open_jobs: Opener, room_name: str) -> None:
    jobs = await open_jobs()
    job = await jobs.enqueue(NewJob(room_name, "svg"))
    assert await jobs.claim("w", lease=30) is not None
    assert await jobs.fail(job.id, "w", error="invalid_board: broken record shape:x", retry_in=None)
    got = await jobs.get(job.id)
    assert got is not None and got.status is JobStatus.FAILED and got.error == "invalid_board: broken record shape:x"
    assert await jobs.claim("w", lease=30) is None


async def test_deleting_a_room_fails_its_waiting_exports(open_jobs: Opener, room_name: str) -> None:
    jobs = await open_jobs()
    waiting = await jobs.enqueue(NewJob(room_name, "png"))
    other = await jobs.enqueue(NewJob(room_name + "-kept", "png"))
    assert await jobs.fail_room(room_name, error="room_not_found: the room was deleted") == 1
    got = await jobs.get(waiting.id)
    assert got is not None and got.status is JobStatus.FAILED
    claimed = await jobs.claim("w", lease=30)
    assert claimed is not None and claimed.id == other.id


async def test_an_enqueue_wakes_a_waiting_worker(open_jobs: Opener, room_name: str) -> None:
    worker = await open_jobs()
    # SQLite has no notification between connections (another process's job is seen at the next poll):
    # there the enqueue comes through the worker's own store, as in the embedded server.
    api = worker if isinstance(worker, SQLiteJobStore) else await open_jobs()
    await worker.wait(0.01)  # starts listening where the backend has notifications
    waiter = asyncio.create_task(worker.wait(30))
    await asyncio.sleep(0)
    await api.enqueue(NewJob(room_name, "json"))
    async with asyncio.timeout(10):
        await waiter
