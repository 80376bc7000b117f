"""permessage-deflate (``COLLAB_WS_DEFLATE``): off by default, when our own websocket protocol serves
(``collab_server.connection``, which negotiates no extension); on, uvicorn's protocol over websockets'
serves instead (``collab_server.transport.CollabWebSocketProtocol``), with the same ``collab.transport``
extension. Real Yjs clients offering compression collaborate under both."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from tests.support.eventually import eventually
from tests.support.floods import (
    OP_PING,
    assert_no_traceback,
    client_frame,
    hostile_server,
    open_raw_websocket,
    upgrade_request,
)
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e

OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


@pytest.fixture(scope="module", params=["off", "on"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = hostile_server(tmp_path_factory.mktemp(f"deflate-{request.param}"), ws_deflate=request.param)
    process.deflate = request.param == "on"  # type: ignore[attr-defined]
    yield process
    process.stop()


def _upgrade_response(server: ServerProcess, path: str) -> bytes:
    request = upgrade_request(server.port, path).replace(b"\r\n\r\n", b"\r\n" + OFFER + b"\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            assert chunk, response
            response += chunk
    return response.lower()


def test_compression_is_negotiated_only_when_turned_on(server: ServerProcess, room_name: str) -> None:
    response = _upgrade_response(server, f"/ws/{room_name}")
    assert response.startswith(b"http/1.1 101")
    negotiated = b"sec-websocket-extensions: permessage-deflate" in response
    assert negotiated == server.deflate  # type: ignore[attr-defined]


async def test_clients_offering_compression_collaborate(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    a = await node.connect(server.url, room_name, deflate=True)
    b = await node.connect(server.url, room_name, deflate=True)
    await a.wait_synced()
    await b.wait_synced()
    await a.insert_text(0, "compressed " * 200)
    await b.insert_text(0, "both ways ")

    async def converged() -> None:
        assert await a.text() == await b.text()
        assert "compressed" in await b.text() and "both ways" in await a.text()

    await eventually(converged)


def test_a_ping_flood_is_dropped(server: ServerProcess, room_name: str) -> None:
    """The ping limit holds under both protocols (100 at once, then 10 a second)."""
    sock = open_raw_websocket(server, f"/ws/{room_name}")
    sock.settimeout(10)
    try:
        sock.sendall(client_frame(OP_PING, b"p") * 300)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):
                pass  # pongs, until the server drops the connection
    finally:
        sock.close()
    assert server.metric('collab_connections_dropped_total{reason="ping_flood"}') >= 1


def test_no_tracebacks_were_logged(server: ServerProcess) -> None:
    assert_no_traceback(server)
