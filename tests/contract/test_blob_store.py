"""The BlobStore contract on both backends: a folder (signed links served by the export routes) and S3
(moto's server, started by the tests; presigned SigV4 links)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from collab_server.api.exports import standalone_app
from collab_server.secrets import Secret
from exports.blobs import BlobStore, blob_key, filename_of, open_blob_store
from exports.service import ExportService
from persistence.jobs_memory import MemoryJobStore
from tests.support import moto_server
from tests.support.moto_server import MotoServer


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    server.create_bucket("collab-exports")
    yield server
    server.stop()


def s3_store(moto: MotoServer, ttl_prefix: str = "team") -> BlobStore:
    return open_blob_store(
        f"s3://collab-exports/{ttl_prefix}", signing_key=Secret(), s3_endpoint=moto.endpoint,
        s3_region=moto_server.REGION, s3_path_style=True, s3_access_key_id=Secret(moto_server.ACCESS_KEY),
        s3_secret_access_key=Secret(moto_server.SECRET_KEY),
    )


@pytest.fixture(params=["file", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "file":
        store = open_blob_store(f"file://{tmp_path}/blobs", signing_key=Secret("k"))
    else:
        store = s3_store(request.getfixturevalue("moto"))
    yield store
    await store.close()


async def _download(blobs: BlobStore, url: str) -> httpx.Response:
    if url.startswith("/"):  # the folder store's links are served by the export routes
        app = standalone_app(ExportService(MemoryJobStore(), blobs))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.get(url)
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def test_a_stored_file_downloads_with_its_type_and_name(blobs: BlobStore, room_name: str) -> None:
    key = blob_key(f"team/{room_name}", "job-1", "png")
    assert key == f"exports/team%2F{room_name}/job-1/{room_name}.png"
    await blobs.put(key, b"\x89PNG fake", content_type="image/png", filename=filename_of(key))
    response = await _download(blobs, await blobs.url(key, expires_in=600))
    assert response.status_code == 200
    assert response.content == b"\x89PNG fake"
    assert response.headers["content-type"] == "image/png"
    assert f'filename="{room_name}.png"' in response.headers["content-disposition"]


async def test_links_carry_their_expiry(blobs: BlobStore, room_name: str) -> None:
    # moto does not enforce a presigned URL's expiry: check what S3 would enforce, X-Amz-Date + Expires
    key = blob_key(room_name, "job-2", "svg")
    await blobs.put(key, b"<svg/>", content_type="image/svg+xml", filename="b.svg")
    query = parse_qs(urlsplit(await blobs.url(key, expires_in=120)).query)
    if "X-Amz-Expires" in query:
        assert query["X-Amz-Expires"] == ["120"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        signed_at = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
        assert abs(signed_at - time.time()) < 60
    else:
        assert abs(int(query["expires"][0]) - (time.time() + 120)) < 5
