"""Exports stored on S3 end to end: a server whose COLLAB_BLOB_URL is s3://… on moto's server; a board
written by a real Yjs client (y-websocket under Node) in the tldraw-yjs-example layout; the export's
presigned URL downloads the file with its Content-Type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import moto_server
from tests.support.eventually import eventually
from tests.support.moto_server import MotoServer
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, MotoServer]]:
    directory = tmp_path_factory.mktemp("s3")
    moto = MotoServer(directory / "moto.log").start()
    moto.create_bucket("boards")
    server = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
            "COLLAB_BLOB_URL": "s3://boards/prod",
            "COLLAB_S3_ENDPOINT": moto.endpoint,
            "COLLAB_S3_REGION": moto_server.REGION,
            "COLLAB_S3_PATH_STYLE": "on",
            "COLLAB_S3_ACCESS_KEY_ID": moto_server.ACCESS_KEY,
            "COLLAB_S3_SECRET_ACCESS_KEY": moto_server.SECRET_KEY,
            "COLLAB_BLOB_URL_TTL": "300",
            "COLLAB_EXPORT_POLL_INTERVAL": "0.5",
            # normal priority: this test is about what is rendered (test_export_renderer checks the idle
            # class); at idle priority a render on a machine busy with other work can wait for minutes
            "COLLAB_EXPORT_NICE": "0",
        },
        log_path=directory / "server.log",
    ).start()
    yield server, moto
    server.stop()
    moto.stop()


async def test_a_json_export_lands_on_s3_and_its_presigned_url_downloads_it(
    s3_server: tuple[ServerProcess, MotoServer], node: YjsNode, room_name: str
) -> None:
    server, moto = s3_server
    client = await node.connect(server.url, room_name)
    await client.wait_synced()
    shape = {"id": "shape:a", "typeName": "shape", "type": "geo", "x": 10, "y": 20, "props": {"w": 100}}
    await client.array_push(
        [
            {"key": "page:page", "val": {"id": "page:page", "typeName": "page", "name": "P"}},
            {"key": "shape:a", "val": shape},
        ],
        name=f"tl_{room_name}",
    )
    await client.map_set("schema", {"schemaVersion": 2, "sequences": {"com.tldraw.store": 4}}, name="meta")

    async with httpx.AsyncClient(base_url=server.http) as http:

        async def exported() -> dict[str, Any]:
            created = await http.post(f"/api/rooms/{room_name}/exports", json={"format": "json"})
            job_id = created.json()["id"]

            async def finished() -> dict[str, Any]:
                status: dict[str, Any] = (await http.get(f"/api/exports/{job_id}")).json()
                assert status["status"] == "completed", status
                return status

            status: dict[str, Any] = await eventually(finished, timeout=30)
            url: str = status["url"]
            assert url.startswith(f"{moto.endpoint}/boards/prod/exports/{room_name}/{job_id}/")
            download = await http.get(url)
            assert download.status_code == 200
            assert download.headers["content-type"] == "application/vnd.tldraw+json"
            tldr: dict[str, Any] = json.loads(download.content)
            assert [r["id"] for r in tldr["records"]] == ["page:page", "shape:a"]  # both edits stored
            return status

        status = await eventually(exported, timeout=30)
        # a second status request mints a new URL, signed at request time
        again = (await http.get(f"/api/exports/{status['id']}")).json()
        assert "X-Amz-Signature=" in again["url"] and "X-Amz-Expires=300" in again["url"]
    assert again["room"] == room_name
