"""The export REST routes mounted on their own (auth off unless a test brings its RoomAccess), with the
memory job store, a folder blob store and the real worker (JSON needs no browser)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.requests import Request

from collab_server.api.exports import standalone_app
from collab_server.errors import Forbidden
from collab_server.secrets import Secret
from exports.blobs_file import FileBlobStore, sign
from exports.service import ExportService
from exports.worker import Worker, WorkerConfig
from persistence.jobs_memory import MemoryJobStore
from persistence.memory import MemoryStore
from tests.support.boards import base_records, board_update, geo

KEY = Secret("test-signing-key")


class DenyRoom:
    """Access that refuses one room, as the access layer does for a private room."""

    def __init__(self, room: str) -> None:
        self.room = room

    async def require_room(self, request: Request, room_id: str, need: Any) -> tuple[Any, Any]:
        if room_id == self.room:
            raise Forbidden(f"you may not read room {room_id!r}")
        return None, None


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.jobs = MemoryJobStore()
        self.documents = MemoryStore()
        self.blobs = FileBlobStore(tmp_path / "blobs", signing_key=KEY)
        self.service = ExportService(self.jobs, self.blobs)

    async def work(self) -> None:
        # JSON only: the worker never calls the renderer
        await Worker(
            self.jobs,
            self.documents,
            self.blobs,
            None,  # type: ignore[arg-type]
            WorkerConfig(worker_id="w", backoff=0),
        ).run(burst=True)


@pytest.fixture
async def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
async def client(setup: Setup, room_name: str) -> AsyncIterator[httpx.AsyncClient]:
    app = standalone_app(setup.service, DenyRoom("private-" + room_name))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


async def test_export_a_board_and_download_it_through_the_signed_link(
    client: httpx.AsyncClient, setup: Setup, room_name: str
) -> None:
    room = f"team/{room_name}"  # a room name with a slash, percent-encoded in the path
    await setup.documents.append_many([(room, board_update(room, [*base_records(), geo("shape:a", text="hi")]))])
    created = await client.post(f"/api/rooms/team%2F{room_name}/exports", json={"format": "json"})
    assert created.status_code == 202, created.text
    job = created.json()
    assert (job["room"], job["format"], job["status"], job["url"]) == (room, "json", "pending", None)
    assert created.headers["location"] == f"/api/exports/{job['id']}"

    await setup.work()
    status = (await client.get(f"/api/exports/{job['id']}")).json()
    assert status["status"] == "completed" and status["completed_at"].endswith("Z")
    download = await client.get(status["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/vnd.tldraw+json"
    assert 'filename="' in download.headers["content-disposition"]
    assert [r["id"] for r in json.loads(download.content)["records"]][-1] == "shape:a"

    redirect = await client.get(f"/api/exports/{job['id']}/download")
    assert redirect.status_code == 302 and redirect.headers["location"].startswith("/api/blobs/")
    listed = (await client.get(f"/api/rooms/team%2F{room_name}/exports")).json()["exports"]
    assert [e["id"] for e in listed] == [job["id"]]


async def test_a_link_with_a_changed_key_or_a_past_expiry_is_refused(
    client: httpx.AsyncClient, setup: Setup, room_name: str
) -> None:
    await setup.documents.append_many([(room_name, board_update(room_name, base_records()))])
    job = (await client.post(f"/api/rooms/{room_name}/exports", json={"format": "json"})).json()
    await setup.work()
    url = (await client.get(f"/api/exports/{job['id']}")).json()["url"]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    key = parts.path[len("/api/blobs/") :]
    later = int(query["expires"][0]) + 3600
    extended = await client.get(parts.path, params={"expires": later, "signature": query["signature"][0]})
    assert extended.status_code == 403
    past = int(time.time()) - 1
    expired = await client.get(parts.path, params={"expires": past, "signature": sign(KEY, key, past)})
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    other_key = await client.get(
        "/api/blobs/exports/x/../../../etc/passwd", params={"expires": later, "signature": query["signature"][0]}
    )
    assert other_key.status_code in (403, 404)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"format": "gif"}, "format must be one of json, svg, png, pdf"),
        ({}, "format must be one of"),
        ({"format": "png", "options": {"scale": 100}}, "options.scale must be between 0.1 and 8"),
        ({"format": "png", "options": {"pixel_ratio": 0}}, "options.pixel_ratio must be between"),
        ({"format": "png", "options": {"padding": -1}}, "options.padding must be between 0 and 512"),
        ({"format": "png", "options": {"background": "yes"}}, "options.background must be true or false"),
        ({"format": "pdf", "options": {"pdf_pages": "some"}}, "options.pdf_pages must be"),
        ({"format": "svg", "options": {"colour": "red"}}, "unknown option 'colour'"),
        ({"format": "svg", "options": {"scale": float("nan")}}, "options.scale must be a number"),
        ([1, 2], "the body must be an object"),
    ],
)
async def test_bad_requests_are_400_and_make_no_job(
    client: httpx.AsyncClient, setup: Setup, room_name: str, body: Any, detail: str
) -> None:
    response = await client.post(
        f"/api/rooms/{room_name}/exports",
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_export" and detail in response.json()["detail"]
    assert await setup.jobs.depth() == 0


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient, room_name: str) -> None:
    response = await client.post(f"/api/rooms/{room_name}/exports", content=b"{format: png")
    assert response.status_code == 400 and response.json()["detail"] == "the body is not JSON"


async def test_a_room_you_may_not_read_cannot_be_exported_nor_its_exports_seen(
    client: httpx.AsyncClient, setup: Setup, room_name: str
) -> None:
    private = "private-" + room_name
    refused = await client.post(f"/api/rooms/{private}/exports", json={"format": "png"})
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert (await client.get(f"/api/rooms/{private}/exports")).status_code == 403
    job = await setup.service.request(private, {"format": "png"})  # made by someone who may
    assert (await client.get(f"/api/exports/{job.id}")).status_code == 403
    assert (await client.get(f"/api/exports/{job.id}/download")).status_code == 403


async def test_unknown_exports_are_404_and_unfinished_ones_have_no_download(
    client: httpx.AsyncClient, room_name: str
) -> None:
    missing = await client.get("/api/exports/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["error"] == "export_not_found"
    assert (await client.get("/api/exports/not-a-uuid")).status_code == 404
    job = (await client.post(f"/api/rooms/{room_name}/exports", json={"format": "svg"})).json()
    assert (await client.get(f"/api/exports/{job['id']}/download")).status_code == 409
    assert (await client.get(f"/api/rooms/{room_name}/exports", params={"limit": 0})).status_code == 400
