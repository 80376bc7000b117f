"""The bytes of a request whose headers are not in yet wait for their turn in the server's ``TurnGate``
(``collab_server.handshake``), like the apps of arriving connections: hundreds of upgrade requests read
in one poll are parsed a few dozen per turn. Here uvicorn's and our protocols run over a transport that
records what they write, with the gate's turn spent beforehand, so that the parse has to wait."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from collab_server.connection import WebSocketConnection, connection_context
from collab_server.handshake import GuardedHTTPProtocol, guarded_http_protocol
from collab_server.transport import STARTS_PER_TURN
from tests.support.eventually import eventually
from tests.support.floods import client_frame, upgrade_request

OP_BINARY = 0x2


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.reading = True
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol


received: list[dict[str, Any]] = []  # what the websocket apps received after their accept


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts a websocket (and keeps what it receives); answers an HTTP request with its body."""
    if scope["type"] == "http":
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        received.append(message)
        if message["type"] == "websocket.disconnect":
            return


def _connection() -> tuple[GuardedHTTPProtocol, RecordingTransport]:
    """An HTTP connection just made, on a server whose gate has started its turn's worth already."""
    loop = asyncio.get_running_loop()
    config = Config(app=_app, ws=WebSocketConnection, lifespan="off", proxy_headers=False, access_log=False)
    config.load()
    state = ServerState()
    gate = connection_context(config, state, {}, loop).gate
    for _ in range(STARTS_PER_TURN):
        gate.arrive(lambda: None, loop)
    protocol = guarded_http_protocol(5.0, 1024)(config=config, server_state=state, app_state={}, _loop=loop)
    transport = RecordingTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport


async def test_a_request_read_in_pieces_while_the_turn_is_spent_is_parsed_whole_in_a_later_turn() -> None:
    protocol, transport = _connection()
    request = upgrade_request(8000, "/ws/room")
    protocol.data_received(request[:30])
    protocol.data_received(request[30:])  # read while the first piece waits: it follows it
    assert transport.get_protocol() is protocol and not transport.written  # nothing parsed yet
    assert not transport.reading  # and nothing more read meanwhile: the client's bytes wait in TCP

    def upgraded() -> None:
        assert isinstance(transport.get_protocol(), WebSocketConnection)
        assert transport.written.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")

    await eventually(upgraded)
    transport.get_protocol().connection_lost(None)


async def test_bytes_that_follow_the_request_while_it_waits_go_to_the_websocket() -> None:
    """A client may not send frames before the 101, but bytes read while the request waited for its turn
    are out of the kernel: they are handed on, in order, never dropped."""
    protocol, transport = _connection()
    received.clear()
    protocol.data_received(upgrade_request(8000, "/ws/room"))
    protocol.data_received(client_frame(OP_BINARY, b"early"))

    def delivered() -> None:
        assert [message.get("bytes") for message in received] == [b"early"]

    await eventually(delivered)
    transport.get_protocol().connection_lost(None)


async def test_a_connection_lost_before_its_turn_is_never_parsed() -> None:
    protocol, transport = _connection()
    protocol.data_received(upgrade_request(8000, "/ws/room"))
    protocol.connection_lost(None)
    for _ in range(5):
        await asyncio.sleep(0)  # the gate's turns go by
    assert transport.get_protocol() is protocol and not transport.written


async def test_a_body_after_the_headers_is_parsed_at_once() -> None:
    """Only a request's headers wait for a turn: once they are in, the connection is a request being
    served, and its body is not held behind arriving connections."""
    protocol, transport = _connection()
    head = b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
    protocol.data_received(head)

    def headers_in() -> None:
        assert protocol.cycle is not None  # uvicorn's request cycle: the headers were parsed

    await eventually(headers_in)
    assert transport.reading  # reading again once the parse had its turn
    protocol.data_received(b"body")
    assert protocol.cycle.body == b"body"  # parsed in this call, not queued

    def answered() -> None:
        assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nbody\r\n" in transport.written

    await eventually(answered)
    protocol.connection_lost(None)
