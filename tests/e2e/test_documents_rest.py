"""Documents over REST (issue 10), against real servers and real Yjs clients.

1. Read a document as JSON and as the Yjs update (and a diff), write an update and a tldraw record patch:
   connected clients see the writes live; a room nobody is connected to is loaded for the call and works
   the same.
2. A REST write on one replica appears live in a client connected to another (Redis between them).
3. A restore while two tldraw clients (y-utility's YKeyValue, as tldraw's binding) are connected leaves
   both showing exactly the old records; restoring the version saved just before brings today's back.
4. Bad input (garbage bytes, a truncated update, a huge body, an unknown version, a patch with wrong types,
   a wrong content type) is a clear 4xx each, and the document is left as it was.
5. Roles: viewers read, editors write and save versions, owners restore.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map, Text

from tests.contract.conftest_broker import REDIS_URL, delete_keys, redis_problem
from tests.support.eventually import eventually
from tests.support.servers import REPO, ServerProcess
from tests.support.tokens import SECRET, bearer, hs256
from tests.support.yjs_clients import YjsClient, YjsNode

pytestmark = pytest.mark.e2e

BINARY = {"Content-Type": "application/octet-stream"}
SCHEMA = {"schemaVersion": 2, "sequences": {"com.tldraw.shape": 4}}
MAX_BYTES = 32 * 1024  # small: a refused body must still fit the socket buffers, or the client sees a reset


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on SQLite for the module, with a small document size limit."""
    directory = tmp_path_factory.mktemp("documents")
    process = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
            "COLLAB_ROOM_GRACE": "0.5",
            "COLLAB_DOCUMENT_MAX_BYTES": str(MAX_BYTES),
        },
        log_path=directory / "server.log",
    )
    process.start()
    yield process
    process.stop()


def shape(record_id: str, x: int, **props: Any) -> dict[str, Any]:
    return {"id": record_id, "typeName": "shape", "type": "geo", "x": x, "y": 0, "props": {"w": 10, **props}}


def text_update(text: str, name: str = "notes") -> bytes:
    doc: Doc[Any] = Doc()
    doc[name] = Text(text)
    return doc.get_update()


async def document(http: httpx.AsyncClient, room: str, **params: str) -> dict[str, Any]:
    response = await http.get(f"/api/rooms/{room}/document", params=params)
    assert response.status_code == 200, response.text
    content: dict[str, Any] = response.json()
    return content


async def state(http: httpx.AsyncClient, room: str) -> tuple[str, bytes]:
    """The room's state vector and JSON view: what must not change when a request is refused."""
    response = await http.get(f"/api/rooms/{room}/document")
    assert response.status_code == 200, response.text
    return response.headers["x-collab-state-vector"], response.content


async def synced(node: YjsNode, url: str, room: str) -> YjsClient:
    client = await node.connect(url, room)
    await client.wait_synced()
    return client


# -- 1. read and write -----------------------------------------------------------------------------


async def test_read_and_write_a_document_while_a_client_is_connected(
    server: ServerProcess, node: YjsNode, room_name: str
) -> None:
    client = await synced(node, server.url, room_name)
    await client.insert_text(0, "hello", name="notes")
    await client.map_set("theme", "dark", name="settings")
    async with httpx.AsyncClient(base_url=server.http) as http:
        await eventually(lambda: _check_json(http, room_name, {"notes": "hello", "settings": {"theme": "dark"}}))

        binary = await http.get(f"/api/rooms/{room_name}/document", headers={"Accept": "application/octet-stream"})
        assert binary.status_code == 200 and binary.headers["content-type"] == "application/octet-stream"
        doc: Doc[Any] = Doc()
        doc.apply_update(binary.content)
        assert str(doc.get("notes", type=Text)) == "hello"
        vector = base64.b64decode(binary.headers["x-collab-state-vector"])
        assert vector == doc.get_state()

        # A diff against the state vector we hold: only what is new since.
        await client.insert_text(5, " world", name="notes")
        await eventually(lambda: _check_json(http, room_name, {"notes": "hello world"}, key="notes"))
        diff = await http.get(
            f"/api/rooms/{room_name}/document",
            params={"state_vector": base64.urlsafe_b64encode(vector).decode()},
        )
        assert diff.status_code == 200 and len(diff.content) < len(binary.content) + 10
        doc.apply_update(diff.content)
        assert str(doc.get("notes", type=Text)) == "hello world"

        # A binary update written over REST reaches the connected client live.
        before = doc.get_state()
        doc.get("settings", type=Map)["columns"] = 3
        written = await http.post(
            f"/api/rooms/{room_name}/document", content=doc.get_update(before), headers=BINARY
        )
        assert written.status_code == 200, written.text
        assert written.json()["changed"] is True
        await eventually(lambda: _check_map(client, "settings", {"theme": "dark", "columns": 3}))
        # The same update again carries nothing new.
        again = await http.post(f"/api/rooms/{room_name}/document", content=doc.get_update(before), headers=BINARY)
        assert again.status_code == 200 and again.json()["changed"] is False
        assert again.json()["state_vector"] == written.json()["state_vector"]


async def test_a_room_nobody_is_in_is_loaded_for_the_call_and_a_patch_reaches_a_tldraw_client(
    server: ServerProcess, node: YjsNode, room_name: str
) -> None:
    records = f"tl_{room_name}"
    async with httpx.AsyncClient(base_url=server.http) as http:
        # Nobody connected: the room is loaded for the write, and unloads after its grace period.
        seed = await http.post(f"/api/rooms/{room_name}/document", content=text_update("seeded"), headers=BINARY)
        assert seed.status_code == 200, seed.text
        patch = {"put": [shape("shape:a", 1)], "delete": ["shape:none"]}
        put = await http.post(f"/api/rooms/{room_name}/document", json=patch)
        assert put.status_code == 200, put.text
        board = await document(http, room_name)
        assert board["records"] == {"shape:a": shape("shape:a", 1)}
        assert board["roots"] == {"notes": "seeded"}

        client = await synced(node, server.url, room_name)
        assert await client.kv_records(records) == {"shape:a": shape("shape:a", 1)}
        moved = await http.post(
            f"/api/rooms/{room_name}/document", json={"put": [shape("shape:a", 50)], "delete": []}
        )
        assert moved.status_code == 200, moved.text
        await eventually(lambda: _check_records(client, records, {"shape:a": shape("shape:a", 50)}))


async def test_the_readme_patch_adds_its_shape(server: ServerProcess, room_name: str) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Documents over REST") :]
    match = re.search(r"-H 'Content-Type: application/json' -d '(\{.*?\})'", section, re.DOTALL)
    assert match is not None, "the README's patch example is gone"
    patch = json.loads(match.group(1))
    async with httpx.AsyncClient(base_url=server.http) as http:
        written = await http.post(f"/api/rooms/{room_name}/document", json=patch)
        assert written.status_code == 200 and written.json()["changed"] is True, written.text
        board = await document(http, room_name)
        assert board["records"] == {record["id"]: record for record in patch["put"]}


# -- 2. across replicas ----------------------------------------------------------------------------


async def test_a_rest_write_on_one_replica_reaches_a_client_on_another(
    server_factory: Any, node: YjsNode, room_name: str
) -> None:
    problem = await redis_problem()
    if problem is not None:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({problem})")
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    env = {"COLLAB_BROKER_URL": REDIS_URL, "COLLAB_BROKER_PREFIX": prefix}
    try:
        first, second = server_factory(env), server_factory(env)
        client = await synced(node, first.url, room_name)
        await client.insert_text(0, "from the client", name="notes")
        async with httpx.AsyncClient(base_url=second.http) as http:
            # The second replica loads the room itself (nobody is connected to it there).
            await eventually(lambda: _check_json(http, room_name, {"notes": "from the client"}))
            patch = {"put": [shape("shape:remote", 7)]}
            written = await http.post(f"/api/rooms/{room_name}/document", json=patch)
            assert written.status_code == 200, written.text
        await eventually(
            lambda: _check_records(client, f"tl_{room_name}", {"shape:remote": shape("shape:remote", 7)})
        )
    finally:
        await delete_keys(REDIS_URL, prefix)


# -- 3. restore with tldraw clients ----------------------------------------------------------------


async def test_a_restore_shows_live_in_tldraw_clients_and_can_be_undone(
    server: ServerProcess, node: YjsNode, room_name: str
) -> None:
    records = f"tl_{room_name}"
    alice, bob = await synced(node, server.url, room_name), await synced(node, server.url, room_name)
    await alice.map_set("schema", SCHEMA, name="meta")
    old = {"page:page": {"id": "page:page", "typeName": "page", "name": "Page 1"}, "shape:1": shape("shape:1", 1),
           "shape:2": shape("shape:2", 2)}
    for key, value in old.items():
        await alice.kv_set(key, value, records)
    await eventually(lambda: _check_records(bob, records, old))
    async with httpx.AsyncClient(base_url=server.http) as http:
        saved = await http.post(f"/api/rooms/{room_name}/versions", json={"label": "afternoon"})
        assert saved.status_code == 201, saved.text
        version = saved.json()["version"]
        assert saved.json()["label"] == "afternoon" and saved.json()["size"] > 0

        # The afternoon goes wrong: edits from both clients.
        await bob.kv_set("shape:1", shape("shape:1", 100, color="red"), records)
        await bob.kv_delete("shape:2", records)
        await alice.kv_set("shape:3", shape("shape:3", 3), records)
        today = {"page:page": old["page:page"], "shape:1": shape("shape:1", 100, color="red"),
                 "shape:3": shape("shape:3", 3)}
        await eventually(lambda: _check_records(alice, records, today))
        await eventually(lambda: _check_records(bob, records, today))

        restored = await http.post(f"/api/rooms/{room_name}/versions/{version}/restore")
        assert restored.status_code == 200, restored.text
        assert restored.json()["changed"] is True and restored.json()["version"] == version
        undo = restored.json()["undo_version"]
        assert isinstance(undo, int) and undo > version
        for client in (alice, bob):
            await eventually(lambda c=client: _check_records(c, records, old))  # type: ignore[misc]
        assert (await document(http, room_name))["records"] == old
        assert (await alice.map("meta")) == {"schema": SCHEMA}

        listed = (await http.get(f"/api/rooms/{room_name}/versions")).json()["versions"]
        labels = {entry["version"]: entry["label"] for entry in listed}
        assert labels[version] == "afternoon" and labels[undo] == f"before restoring version {version}"
        old_view = await http.get(f"/api/rooms/{room_name}/versions/{version}/document")
        assert old_view.status_code == 200 and old_view.json()["records"] == old

        # Undo: restoring the version saved just before the restore brings today's records back.
        undone = await http.post(f"/api/rooms/{room_name}/versions/{undo}/restore")
        assert undone.status_code == 200, undone.text
        for client in (alice, bob):
            await eventually(lambda c=client: _check_records(c, records, today))  # type: ignore[misc]
        # Restoring what is already there changes nothing.
        same = await http.post(f"/api/rooms/{room_name}/versions/{undo}/restore")
        assert same.status_code == 200 and same.json()["changed"] is False


# -- 4. bad input ----------------------------------------------------------------------------------


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    server: ServerProcess, node: YjsNode, room_name: str
) -> None:
    client = await synced(node, server.url, room_name)
    await client.insert_text(0, "keep me", name="notes")
    url = f"/api/rooms/{room_name}/document"
    good = text_update("more", name="other")
    async with httpx.AsyncClient(base_url=server.http) as http:
        await eventually(lambda: _check_json(http, room_name, {"notes": "keep me"}))
        before = await state(http, room_name)
        refusals: list[tuple[httpx.Response, int, str]] = [
            (await http.post(url, content=b"\x07garbage, not an update", headers=BINARY), 400, "malformed_update"),
            (await http.post(url, content=good[:-4], headers=BINARY), 400, "malformed_update"),
            (await http.post(url, content=b"\x00" * (2 * MAX_BYTES), headers=BINARY), 413, "payload_too_large"),
            (await http.post(url, json={"put": [{"id": 42, "typeName": "shape"}]}), 400, "invalid_patch"),
            (await http.post(url, json={"put": "shape:a"}), 400, "invalid_patch"),
            (await http.post(url, content=b"{not json", headers={"Content-Type": "application/json"}), 400,
             "malformed_json"),
            (await http.post(url, content=good, headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
            (await http.get(url, params={"state_vector": "//8="}), 400, "invalid_state_vector"),  # b"\xff\xff"
            (await http.get(url, params={"state_vector": "%%%"}), 422, "invalid_request"),
            (await http.get(url, params={"types": "notes:novel"}), 422, "invalid_request"),
            (await http.get(f"/api/rooms/{room_name}/versions/999/document"), 404, "not_found"),
            (await http.post(f"/api/rooms/{room_name}/versions/999/restore"), 404, "not_found"),
            (await http.get(f"/api/rooms/{room_name}/versions/x/document"), 404, "not_found"),
        ]
        for response, status, code in refusals:
            assert (response.status_code, response.json()["error"]) == (status, code), response.text
            assert response.json()["detail"]
        assert await state(http, room_name) == before
        assert await client.text("notes") == "keep me"
        # And the room still takes a good update afterwards.
        ok = await http.post(url, content=good, headers=BINARY)
        assert ok.status_code == 200, ok.text
        await eventually(lambda: _check_text(client, "other", "more"))


async def test_documents_may_be_larger_than_other_request_bodies(server_factory: Any, room_name: str) -> None:
    server = server_factory({"COLLAB_MAX_BODY_BYTES": "1024"})
    update = text_update("x" * 8000)
    async with httpx.AsyncClient(base_url=server.http) as http:
        written = await http.post(f"/api/rooms/{room_name}/document", content=update, headers=BINARY)
        assert written.status_code == 200, written.text
        other = await http.post("/api/rooms", content=b'{"name": "' + b"x" * 2000 + b'"}')
        assert other.status_code == 413


# -- 5. roles --------------------------------------------------------------------------------------


async def test_viewers_read_editors_write_and_owners_restore(server_factory: Any, room_name: str) -> None:
    server = server_factory({"COLLAB_JWT_SECRET": SECRET, "COLLAB_BCRYPT_COST": "4"})

    def auth(user: str) -> dict[str, str]:
        return bearer(hs256(user))

    async with httpx.AsyncClient(base_url=server.http) as http:
        created = await http.post("/api/rooms", json={"name": "board", "visibility": "private"}, headers=auth("owner"))
        assert created.status_code == 201, created.text
        room = created.json()["id"]
        for user, role in (("ed", "editor"), ("vi", "viewer")):
            granted = await http.put(f"/api/rooms/{room}/participants/{user}", json={"role": role},
                                     headers=auth("owner"))
            assert granted.status_code == 200, granted.text
        url = f"/api/rooms/{room}/document"
        assert (await http.post(url, content=text_update("x"), headers={**BINARY, **auth("vi")})).status_code == 403
        assert (await http.post(url, content=text_update("x"), headers={**BINARY, **auth("ed")})).status_code == 200
        assert (await http.get(url, headers=auth("vi"))).json() == {"notes": "x"}
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=auth("stranger"))).status_code == 404
        saved = await http.post(f"/api/rooms/{room}/versions", json={"label": "v"}, headers=auth("ed"))
        assert saved.status_code == 201 and saved.json()["created_by"] == "ed"
        restore = f"/api/rooms/{room}/versions/{saved.json()['version']}/restore"
        assert (await http.post(restore, headers=auth("ed"))).status_code == 403
        assert (await http.post(restore, headers=auth("owner"))).status_code == 200


# -- checks ----------------------------------------------------------------------------------------


async def _check_json(http: httpx.AsyncClient, room: str, expected: dict[str, Any], key: str | None = None) -> None:
    content = await document(http, room)
    if key is not None:
        assert content[key] == expected[key]
    else:
        assert {name: content.get(name) for name in expected} == expected


async def _check_map(client: YjsClient, name: str, expected: dict[str, Any]) -> None:
    assert await client.map(name) == expected


async def _check_text(client: YjsClient, name: str, expected: str) -> None:
    assert await client.text(name) == expected


async def _check_records(client: YjsClient, name: str, expected: dict[str, Any]) -> None:
    assert await client.kv_records(name) == expected
