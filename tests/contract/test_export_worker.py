"""The export job machinery with fake renderers, on every JobStore backend: claim races, a worker killed
mid-job, a renderer that always fails, a room deleted while its export waits, broken stored bytes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from collab_server.secrets import Secret
from exports.blobs_file import FileBlobStore
from exports.browser import BrowserRenderer
from exports.errors import RenderFailed
from exports.options import ExportFormat, ExportOptions
from exports.renderer import Rendered, Renderer
from exports.service import ExportService
from exports.tldr import Board
from exports.worker import Worker, WorkerConfig
from persistence.jobs import JobStatus, JobStore
from persistence.memory import MemoryStore
from tests.contract.conftest_jobs import Opener
from tests.support.boards import base_records, board_update, geo
from tests.support.eventually import eventually


class FakeRenderer:
    """Renders a board as a line of text; ``hang`` blocks forever, ``fail`` always raises."""

    def __init__(self, *, hang: bool = False, fail: bool = False) -> None:
        self.calls = 0
        self.hang = hang
        self.fail = fail
        self.started = asyncio.Event()

    async def render(self, board: Board, fmt: ExportFormat, options: ExportOptions) -> Rendered:
        self.calls += 1
        self.started.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise RenderFailed("the browser crashed (injected)")
        ids = ",".join(sorted(str(r["id"]) for r in board.records))
        return Rendered(f"{fmt.value}:{ids}".encode(), {"fake": True})

    async def close(self) -> None:
        pass


@pytest.fixture
async def documents(room_name: str) -> MemoryStore:
    store = MemoryStore()
    records = [*base_records(), geo("shape:a", text="old")]
    await store.append_many([(room_name, board_update(room_name, records, rewrites=[geo("shape:a", text="new")]))])
    return store


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs", signing_key=Secret("test-key"))


def make_worker(
    jobs: JobStore, documents: MemoryStore, blobs: FileBlobStore, renderer: Renderer, name: str = "w1", **config: Any
) -> Worker:
    return Worker(
        jobs, documents, blobs, renderer, WorkerConfig(worker_id=name, backoff=0, poll_interval=0.05, **config)
    )


async def test_a_json_export_is_the_tldr_file_with_the_right_most_entry_of_each_key(
    open_jobs: Opener, documents: MemoryStore, blobs: FileBlobStore, room_name: str
) -> None:
    jobs = await open_jobs()
    service = ExportService(jobs, blobs)
    job = await service.request(room_name, {"format": "json"})
    assert await make_worker(jobs, documents, blobs, FakeRenderer()).run(burst=True) == 1
    done = await service.get(job.id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.result_key is not None
    tldr = json.loads(blobs.path_of(done.result_key).read_text())
    assert tldr["tldrawFileFormatVersion"] == 1 and tldr["schema"]["schemaVersion"] == 2
    shapes = [r for r in tldr["records"] if r["typeName"] == "shape"]
    assert [s["props"]["text"] for s in shapes] == ["new"]
    assert isinstance(shapes[0]["x"], int)  # Yjs float64 numbers are written back as the integers they were
    described = await service.describe(done)
    assert described["url"].startswith("/api/blobs/exports/") and described["error"] is None


async def test_two_workers_racing_render_a_job_once(
    open_jobs: Opener, documents: MemoryStore, blobs: FileBlobStore, room_name: str
) -> None:
    a, b = await open_jobs(), await open_jobs()
    job = await ExportService(a, blobs).request(room_name, {"format": "svg"})
    renderer = FakeRenderer()
    await asyncio.gather(
        make_worker(a, documents, blobs, renderer, "wa").run(burst=True),
        make_worker(b, documents, blobs, renderer, "wb").run(burst=True),
    )
    assert renderer.calls == 1
    done = await a.get(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.attempts == 1


async def test_a_worker_killed_mid_job_loses_its_lease_and_the_job_is_retried(
    open_jobs: Opener, documents: MemoryStore, blobs: FileBlobStore, room_name: str
) -> None:
    jobs_a, jobs_b = await open_jobs(), await open_jobs()
    job = await ExportService(jobs_a, blobs).request(room_name, {"format": "png"})
    stuck = FakeRenderer(hang=True)
    doomed = asyncio.create_task(make_worker(jobs_a, documents, blobs, stuck, "doomed", lease=0.3).run())
    await asyncio.wait_for(stuck.started.wait(), 10)
    doomed.cancel()  # as SIGKILL would: nothing is released, the lease simply stops being renewed
    await asyncio.gather(doomed, return_exceptions=True)
    good = FakeRenderer()
    rescuer = make_worker(jobs_b, documents, blobs, good, "rescuer")

    async def completed() -> None:
        await rescuer.run(burst=True)
        got = await jobs_b.get(job.id)
        assert got is not None and got.status is JobStatus.COMPLETED

    await eventually(completed, timeout=15)
    got = await jobs_b.get(job.id)
    assert got is not None and got.attempts == 2 and got.worker_id == "rescuer" and good.calls == 1


async def test_a_renderer_that_always_fails_ends_failed_after_the_attempts_with_the_reason(
    open_jobs: Opener, documents: MemoryStore, blobs: FileBlobStore, room_name: str
) -> None:
    jobs = await open_jobs()
    job = await ExportService(jobs, blobs, max_attempts=3).request(room_name, {"format": "pdf"})
    renderer = FakeRenderer(fail=True)
    await make_worker(jobs, documents, blobs, renderer).run(burst=True)
    got = await jobs.get(job.id)
    assert got is not None and got.status is JobStatus.FAILED
    assert (got.attempts, renderer.calls) == (3, 3)
    assert got.error == "render_failed: the browser crashed (injected)"


async def test_a_room_deleted_while_its_export_waits_fails_it_without_rendering(
    open_jobs: Opener, documents: MemoryStore, blobs: FileBlobStore, room_name: str
) -> None:
    jobs = await open_jobs()
    service = ExportService(jobs, blobs)
    waiting = await service.request(room_name, {"format": "png"})
    assert await service.room_deleted(room_name) == 1
    never_written = await service.request(room_name + "-gone", {"format": "svg"})
    renderer = FakeRenderer()
    await make_worker(jobs, documents, blobs, renderer).run(burst=True)
    assert renderer.calls == 0
    first, second = await service.get(waiting.id), await service.get(never_written.id)
    assert first.status is JobStatus.FAILED and first.error is not None and first.error.startswith("room_not_found")
    assert second.status is JobStatus.FAILED and second.attempts == 1
    assert (await service.describe(second))["error"]["code"] == "room_not_found"


async def test_undecodable_stored_bytes_fail_the_job_not_the_worker(
    open_jobs: Opener, blobs: FileBlobStore, room_name: str
) -> None:
    documents = MemoryStore()
    await documents.append_many([(room_name, b"\x01\xff\xff\xff\xff\x0f garbage")])
    jobs = await open_jobs()
    job = await ExportService(jobs, blobs).request(room_name, {"format": "json"})
    await make_worker(jobs, documents, blobs, FakeRenderer()).run(burst=True)
    got = await jobs.get(job.id)
    assert got is not None and got.status is JobStatus.FAILED and got.attempts == 1
    assert got.error is not None and got.error.startswith("invalid_board: the stored document cannot be decoded")


async def test_without_chromium_an_image_export_fails_at_once_naming_the_install_command(
    open_jobs: Opener, documents: MemoryStore, blobs: FileBlobStore, room_name: str, tmp_path: Path
) -> None:
    jobs = await open_jobs()
    service = ExportService(jobs, blobs)
    image = await service.request(room_name, {"format": "png"})
    board = await service.request(room_name, {"format": "json"})
    renderer = BrowserRenderer(executable=str(tmp_path / "no-chromium"))
    await make_worker(jobs, documents, blobs, renderer).run(burst=True)
    failed, completed = await service.get(image.id), await service.get(board.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error is not None and failed.error.startswith("renderer_unavailable")
    assert "scripts/build-renderer" in failed.error
    assert completed.status is JobStatus.COMPLETED  # JSON never needs the browser
