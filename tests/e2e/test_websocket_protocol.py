"""The websocket layer itself (``collab_server.connection``), on raw sockets: the opening handshake's
refusals, the frame rules of RFC 6455 with the close code each breach earns, and the closing handshake.
A browser or the websockets library would never send most of these frames; an attacker would."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab_server.connection import MAX_FRAGMENTS
from collab_server.protocol import SyncStep2, decode_frame, encode_sync_step1, encode_update
from tests.support.floods import assert_no_traceback, hostile_server, open_raw_websocket, upgrade_request
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e

MAX_MESSAGE = 64 * 1024

FIN = 0x80
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = hostile_server(tmp_path_factory.mktemp("websocket-protocol"), max_message_bytes=str(MAX_MESSAGE))
    yield process
    process.stop()


def frame(first: int, payload: bytes, *, masked: bool = True, length: int | None = None) -> bytes:
    """A client frame: ``first`` is the FIN/RSV/opcode byte; ``length`` overrides the announced length."""
    size = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The next server frame: (opcode, payload). Server frames are never masked."""
    first, second = read_exactly(sock, 2)
    assert not second & 0x80, "a server frame must not be masked"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exactly(sock, 8))
    return first & 0x0F, read_exactly(sock, length)


def close_received(sock: socket.socket) -> tuple[int, str]:
    """Read server frames until its close frame; its code and reason."""
    sock.settimeout(10)
    while True:
        opcode, payload = read_frame(sock)
        if opcode == CLOSE:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def assert_socket_closed(sock: socket.socket) -> None:
    """The server closed the TCP connection after its close frame (a reset, when it closed with bytes of
    ours still unread: the rest of a refused message)."""
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass


def connected(server: ServerProcess, room: str) -> socket.socket:
    sock = open_raw_websocket(server, f"/ws/{room}")
    sock.settimeout(10)
    return sock


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        pytest.param(frame(FIN | BINARY, b"abc", masked=False), 1002, "incorrect masking", id="unmasked"),
        pytest.param(frame(FIN | 0x40 | BINARY, b"abc"), 1002, "reserved bits must be 0", id="rsv1"),
        pytest.param(frame(FIN | 0x3, b"abc"), 1002, "invalid opcode: 3", id="opcode-3"),
        pytest.param(frame(FIN | 0xB, b""), 1002, "invalid opcode: 11", id="opcode-11"),
        pytest.param(frame(PING, b"p"), 1002, "fragmented control frame", id="fragmented-ping"),
        pytest.param(frame(FIN | PING, b"p" * 126), 1002, "control frame too long", id="long-ping"),
        pytest.param(frame(FIN | CONTINUATION, b"abc"), 1002, "unexpected continuation frame", id="lone-continuation"),
        pytest.param(
            frame(BINARY, b"\x00") + frame(FIN | BINARY, b"\x00"),
            1002,
            "expected a continuation frame",
            id="interleaved-message",
        ),
        pytest.param(frame(FIN | TEXT, b"\xff\xfe"), 1007, "invalid UTF-8 in a text message", id="bad-utf8"),
        pytest.param(frame(FIN | CLOSE, b"\x03"), 1002, "close frame too short", id="close-1-byte"),
        pytest.param(
            frame(FIN | CLOSE, struct.pack("!H", 1005)), 1002, "invalid close code: 1005", id="close-code-1005"
        ),
        pytest.param(
            frame(FIN | CLOSE, struct.pack("!H", 1000) + b"\xc3"),
            1007,
            "invalid UTF-8 in the close reason",
            id="close-bad-utf8",
        ),
        # Announced, never sent: refused from the header alone, so nothing is buffered for it.
        pytest.param(
            frame(FIN | BINARY, b"", length=1 << 40)[:10], 1009, f"message over {MAX_MESSAGE} bytes", id="announced-1tb"
        ),
        pytest.param(
            frame(BINARY, b"") + frame(CONTINUATION, b"") * MAX_FRAGMENTS,
            1009,
            f"message in over {MAX_FRAGMENTS} fragments",
            id="empty-fragments",
        ),
        pytest.param(
            frame(BINARY, b"\x00" * (MAX_MESSAGE // 2)) + frame(FIN | CONTINUATION, b"\x00" * (MAX_MESSAGE // 2 + 1)),
            1009,
            f"message over {MAX_MESSAGE} bytes",
            id="fragments-over-limit",
        ),
    ],
)
def test_a_frame_that_breaks_the_format_is_closed_with_its_code(
    server: ServerProcess, room_name: str, frames: bytes, code: int, reason: str
) -> None:
    sock = connected(server, room_name)
    try:
        sock.sendall(frames)
        assert close_received(sock) == (code, reason)
        assert_socket_closed(sock)
    finally:
        sock.close()


def test_a_message_at_the_size_limit_is_taken(server: ServerProcess, room_name: str) -> None:
    """The limit is inclusive: a fragmented message of exactly ``max_message_bytes`` is not refused (the
    room then refuses its content, which is not a y-protocol message, with 4400)."""
    sock = connected(server, room_name)
    try:
        half = MAX_MESSAGE // 2
        sock.sendall(frame(BINARY, b"\x2a" * half) + frame(FIN | CONTINUATION, b"\x00" * half))
        code, _ = close_received(sock)
        assert code == 4400
    finally:
        sock.close()


def test_a_message_larger_than_one_read_is_applied_and_the_frame_after_it_read(tmp_path: Path, room_name: str) -> None:
    """A frame of 300 KB arrives over several socket reads (uvloop reads at most 256 KB at a time), so it
    is put together in the connection's buffer, unmasked from a view of it, and the buffer then trimmed
    while the next frame (a step1, in the same send) waits in it."""
    server = hostile_server(tmp_path, max_message_bytes=str(1 << 20))
    doc: Doc[Any] = Doc()
    text = os.urandom(150_000).hex()
    doc.get("t", type=Text).insert(0, text)
    sock = connected(server, room_name)
    try:
        step1 = frame(FIN | BINARY, encode_sync_step1(b"\x00"))
        sock.sendall(frame(FIN | BINARY, encode_update(doc.get_update())) + step1)
        while True:
            opcode, payload = read_frame(sock)
            assert opcode == BINARY
            steps = [message for message in decode_frame(payload) if isinstance(message, SyncStep2)]
            if steps:
                break
        synced: Doc[Any] = Doc()
        synced.apply_update(steps[0].update)
        assert str(synced.get("t", type=Text)) == text
    finally:
        sock.close()
        server.stop()


def test_the_closing_handshake_echoes_the_client_close(server: ServerProcess, room_name: str) -> None:
    sock = connected(server, room_name)
    try:
        sock.sendall(frame(FIN | CLOSE, struct.pack("!H", 4001) + "bye ✓".encode()))
        assert close_received(sock) == (4001, "bye ✓")
        assert_socket_closed(sock)
    finally:
        sock.close()


def test_a_ping_between_fragments_is_answered_with_its_payload(server: ServerProcess, room_name: str) -> None:
    sock = connected(server, room_name)
    try:
        sock.sendall(frame(BINARY, b"\x00") + frame(FIN | PING, b"are you there"))
        while True:
            opcode, payload = read_frame(sock)
            if opcode == PONG:
                break
        assert payload == b"are you there"
        # The fragmented message goes on after the ping, and a new message may not start meanwhile.
        sock.sendall(frame(FIN | BINARY, b"\x00"))
        assert close_received(sock) == (1002, "expected a continuation frame")
    finally:
        sock.close()


TWO_KEYS = b"A" * 22 + b"==\r\nSec-WebSocket-Key: "


def _handshake_response(server: ServerProcess, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


@pytest.mark.parametrize(
    ("edit", "status", "text"),
    [
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), b"426", b"Sec-WebSocket-Version must be 13"),
        ((b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Nonce: "), b"400", b"exactly one Sec-WebSocket-Key header"),
        (
            (b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: " + b"A" * 22 + b"==\r\nSec-WebSocket-Key: "),
            b"400",
            b"exactly one",
        ),
        ((b"GET ", b"PUT "), b"400", b"the method must be GET"),
    ],
)
def test_a_bad_opening_handshake_gets_a_plain_http_refusal(
    server: ServerProcess, room_name: str, edit: tuple[bytes, bytes], status: bytes, text: bytes
) -> None:
    request = upgrade_request(server.port, f"/ws/{room_name}").replace(*edit)
    response = _handshake_response(server, request)
    assert response.startswith(b"HTTP/1.1 " + status), response
    assert text in response
    if status == b"426":
        assert b"sec-websocket-version: 13\r\n" in response.lower()


def test_a_malformed_key_is_refused(server: ServerProcess, room_name: str) -> None:
    request = upgrade_request(server.port, f"/ws/{room_name}")
    start = request.index(b"Sec-WebSocket-Key: ") + len(b"Sec-WebSocket-Key: ")
    end = request.index(b"\r\n", start)
    response = _handshake_response(server, request[:start] + b"c2hvcnQ=" + request[end:])
    assert response.startswith(b"HTTP/1.1 400"), response
    assert b"Sec-WebSocket-Key must be 16 bytes in base64" in response


def test_a_request_target_that_is_not_ascii_is_refused(server: ServerProcess) -> None:
    # httptools refuses it before the upgrade; the connection's own check is the second line.
    request = upgrade_request(server.port, "/ws/room").replace(b"/ws/room", "/ws/r\u00e9".encode())
    response = _handshake_response(server, request)
    assert response.startswith(b"HTTP/1.1 400"), response


def test_no_tracebacks_were_logged(server: ServerProcess) -> None:
    assert_no_traceback(server)
