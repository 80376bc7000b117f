"""``collab-server worker --burst``: a separate worker process drains the queue the server's API filled."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from collab_server.secrets import Secret
from exports.blobs_file import FileBlobStore
from exports.service import ExportService
from persistence.jobs import JobStatus
from persistence.jobs_sqlite import SQLiteJobStore
from persistence.sqlite import SQLiteStore
from tests.support.boards import base_records, board_update, geo
from tests.support.servers import REPO

pytestmark = pytest.mark.e2e


async def test_burst_worker_completes_the_queue_and_exits(tmp_path: Path, room_name: str) -> None:
    database = tmp_path / "collab.sqlite3"
    documents = await SQLiteStore(database).open()
    await documents.append_many([(room_name, board_update(room_name, [*base_records(), geo("shape:x")]))])
    await documents.close()
    jobs = await SQLiteJobStore(database).open()
    blobs = FileBlobStore(tmp_path / "blobs", signing_key=Secret("k"))
    service = ExportService(jobs, blobs)
    queued = [await service.request(room_name, {"format": "json"}) for _ in range(3)]
    env = {
        "COLLAB_DATABASE_URL": f"sqlite:///{database}",
        "COLLAB_BLOB_URL": f"file://{tmp_path}/blobs",
        "PATH": "/usr/bin:/bin",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "collab_server", "worker", "--burst"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    for job in queued:
        finished = await service.get(job.id)
        assert finished.status is JobStatus.COMPLETED, finished.error
        assert finished.result_key is not None
        assert json.loads(blobs.path_of(finished.result_key).read_bytes())["records"][-1]["id"] == "shape:x"
    await jobs.close()
