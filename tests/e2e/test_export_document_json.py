"""A room that is not a tldraw board, exported as JSON: the file is the document REST endpoint's answer.

A real Yjs client (yjs + y-websocket under Node) writes a Y.Text, a Y.Map and a Y.Array through a real
server; the server's in-process worker exports the room as JSON (no browser needed); the downloaded file
equals, byte for byte, what ``GET /api/rooms/{id}/document?format=json`` answers for the same content.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.eventually import eventually
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def export_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("document-export")
    process = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
            "COLLAB_BLOB_URL": f"file://{directory}/blobs",
            "COLLAB_BLOB_SIGNING_KEY": secrets.token_urlsafe(16),
        },
        log_path=directory / "server.log",
    )
    process.start()
    yield process
    process.stop()


async def _export_json(http: httpx.AsyncClient, room: str) -> httpx.Response:
    created = await http.post(f"/api/rooms/{room}/exports", json={"format": "json"})
    assert created.status_code == 202, created.text

    async def finished() -> dict[str, Any]:
        status: dict[str, Any] = (await http.get(f"/api/exports/{created.json()['id']}")).json()
        assert status["status"] in ("completed", "failed"), status
        return status

    status = await eventually(finished, timeout=30, interval=0.1)
    assert status["status"] == "completed", status["error"]
    download = await http.get(status["url"])
    assert download.status_code == 200, download.text
    return download


async def test_a_plain_yjs_document_exports_as_the_document_endpoint_shows_it(
    export_server: ServerProcess, node: YjsNode, room_name: str
) -> None:
    client = await node.connect(export_server.url, room_name)
    await client.wait_synced()
    await client.insert_text(0, "Hello, export ✓", name="notes")
    await client.map_set("title", "Plan", name="settings")
    await client.map_set("size", {"w": 3, "tags": ["a", "b"]}, name="settings")
    await client.array_push([1, "two", {"three": 3.5}, [4]], name="items")

    async with httpx.AsyncClient(base_url=export_server.http, timeout=30) as http:
        rest = await http.get(f"/api/rooms/{room_name}/document", params={"format": "json"})
        assert rest.status_code == 200, rest.text
        view = rest.json()
        assert view["notes"] == "Hello, export ✓"
        assert view["settings"] == {"title": "Plan", "size": {"w": 3, "tags": ["a", "b"]}}
        assert view["items"] == [1, "two", {"three": 3.5}, [4]]

        # the worker reads the store, which the client's edits reach within the group-commit window
        async def exported_as_rest() -> httpx.Response:
            download = await _export_json(http, room_name)
            assert download.content == rest.content
            return download

        download = await eventually(exported_as_rest, timeout=30)
    assert download.headers["content-type"].startswith("application/json")
    assert download.headers["content-disposition"].endswith('.json"')
    await client.destroy()
