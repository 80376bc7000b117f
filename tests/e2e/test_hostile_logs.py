"""Logs a hostile client cannot flood or garble: one line per refused peer (rate-limited per reason), no
tracebacks for what a client did, native panic reports through logging as JSON, and close reasons in
our words."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets
from websockets.asyncio.client import connect

from collab_server.protocol import encode_sync_step1, encode_update
from tests.support.eventually import eventually
from tests.support.floods import Sentinel, assert_no_traceback, close_code, hostile_server, sentinel_room
from tests.support.servers import ServerProcess

# docs/upstream/panic_partial_commit.py and runtime_error_partial_commit.py
PANIC_UPDATE = bytes.fromhex(
    "0102c6b98d9a00ffffffffff0f0401056e6f7465730568c3a96c6c2801016d026b310175027c3f8000007c4000000000"
)
PARTIAL_A = bytes.fromhex("010101002801016d016b017800")
PARTIAL_B = bytes.fromhex("020103002801016d017a0178010200040001000161" + "00")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = hostile_server(tmp_path_factory.mktemp("hostile-logs"), log_json="1")
    yield process
    process.stop()


def _log_lines(server: ServerProcess) -> list[dict[str, object]]:
    assert server.log_path is not None
    lines = server.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.strip()]  # every line is JSON, or this raises


async def test_a_panicking_update_closes_its_peer_and_the_panic_is_one_json_record(
    server: ServerProcess, room_name: str
) -> None:
    sentinel = Sentinel(server, sentinel_room(room_name))
    async with sentinel.watching(), connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        await ws.send(encode_update(PANIC_UPDATE))
        code, reason = await close_code(ws)
    assert (code, reason) == (4400, "protocol error: update could not be applied to the document")
    sentinel.assert_served()

    def panic_logged() -> None:
        panics = [line for line in _log_lines(server) if line["logger"] == "collab_server.native"]
        assert panics, "no panic record"
        assert str(panics[-1]["message"]).endswith(
            "the CRDT library panicked: called `Option::unwrap()` on a `None` value (at yrs-0.28.0/src/store.rs:234:50)"
        )

    await eventually(panic_logged)
    assert server.metric("collab_native_panics_total") >= 1
    # Whatever state the panic left the room in, a newcomer is never told to stop retrying: it is
    # served, or closed with a transient code (1011) until the room is rebuilt.
    async with connect(f"{server.url}/{room_name}") as newcomer:
        await newcomer.recv()
        await newcomer.send(encode_sync_step1(b"\x00"))
        try:
            while (await asyncio.wait_for(newcomer.recv(decode=False), 5))[:2] != b"\x00\x01":
                pass
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (1011, "the room's document is damaged; retry later")


async def test_a_failed_apply_is_refused_without_a_traceback(server: ServerProcess, room_name: str) -> None:
    async with connect(f"{server.url}/{room_name}") as ws:
        await ws.recv()
        await ws.send(encode_update(PARTIAL_A))
        await ws.send(encode_update(PARTIAL_B))
        code, reason = await close_code(ws)
    # The library's own words ("block parent <1#0> must be deleted or shared ref type") stay out of it.
    assert (code, reason) == (4400, "protocol error: update could not be applied to the document")


async def test_refusals_are_logged_a_few_lines_per_reason(server: ServerProcess, room_name: str) -> None:
    for _ in range(100):
        async with connect(f"{server.url}/{room_name}") as ws:
            await ws.recv()
            await ws.send(b"\x2a")
            assert await close_code(ws) == (4400, "protocol error: unknown message type 42")
    refusals = [line for line in _log_lines(server) if line.get("reason") == "protocol_error"]
    assert 1 <= len(refusals) <= 10
    assert server.metric('collab_peers_closed_total{reason="protocol_error"}') >= 100
    assert server.metric("collab_log_lines_suppressed_total") >= 90


async def test_garbage_http_requests_cannot_flood_the_log(server: ServerProcess) -> None:
    for _ in range(100):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
        await reader.read()  # uvicorn answers 400 and closes
        writer.close()
    invalid = [line for line in _log_lines(server) if "Invalid HTTP request" in str(line["message"])]
    assert 1 <= len(invalid) <= 10


def test_every_line_is_json_and_none_is_a_traceback(server: ServerProcess) -> None:
    assert _log_lines(server)
    assert_no_traceback(server)
