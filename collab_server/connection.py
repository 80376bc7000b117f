"""One websocket connection, from the upgrade request to the closing handshake: RFC 6455 without
extensions, written for many idle connections and small binary messages.

uvicorn's HTTP protocol parses the upgrade request; ``collab_server.handshake`` then hands the parsed
request to ``WebSocketConnection.upgrade`` (uvicorn's own protocols get it re-serialised and parse it a
second time). From there this protocol does everything: the opening handshake (101, or the app's HTTP
denial, or 403), the ASGI websocket events, the frame format, fragmentation, pings and pongs, keepalive,
and the closing handshake. It offers the app the ``collab.transport`` extension described in
``collab_server.transport`` (the extension's value is the connection itself). A connection's app starts
when the server's ``transport.TurnGate`` gives it its turn, a few dozen per loop turn, so that a storm of
arriving clients does not stall the rooms already open.

Why not uvicorn's protocol over websockets' sans-I/O one (what ran before, and still runs when
permessage-deflate is on: ``transport.CollabWebSocketProtocol``): that pair costs an idle connection
two protocol objects, a stream reader and two suspended parser generators (about 1.2 KiB of the 7.7 KiB
we measured per idle connection), reads the socket addresses twice, and parses every frame in a
generator in pure Python. Here an idle connection is one object with slots, and a frame is parsed by a
loop over the bytes just read.

The frame rules (RFC 6455 section 5), each a close with the code websockets would send:

- a client frame must be masked, must not set reserved bits (no extension is ever negotiated), and must
  use a known opcode (1002);
- a control frame (close, ping, pong) must not be fragmented and carries at most 125 bytes (1002);
- a continuation frame needs a fragmented message in progress, and a new text or binary frame must wait
  for the one in progress to end (1002);
- a message, fragmented or not, may not exceed ``ws_max_size`` bytes: refused as soon as a frame header
  announces more, before its payload is buffered (1009); nor come in more than ``MAX_FRAGMENTS`` frames
  (1009);
- a text message must be valid UTF-8 (1007); a close frame's code must be one a peer may send, and its
  reason valid UTF-8 (1002, 1007).

Incomplete frames wait in a ``bytearray`` that grows by appending, so a large message arriving in many
reads is copied once, not once per read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import struct
import weakref
from asyncio import AbstractEventLoop, Protocol, Task, TimerHandle, Transport, get_event_loop
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState

from collab_server.transport import (
    PING_BURST,
    TRANSPORT_EXTENSION,
    CollabTransportBase,
    FrameHandler,
    KeepaliveTimer,
    PollClock,
    ReceiveQueue,
    Resume,
    TurnGate,
    WritableFlag,
    binary_frame_header,
    keepalive_timers,
    max_buffered_bytes,
    share_common_headers,
)

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

logger = logging.getLogger("uvicorn.error")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80

# Close codes a peer may send in a close frame (RFC 6455 7.4, and the IANA registry's 1012-1014);
# 3000-4999 are for libraries and applications. 1005, 1006 and 1015 must never be sent.
_SENDABLE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

# Frame payloads from this size on are unmasked from a view of the read buffer instead of a copy.
_UNMASK_IN_PLACE = 64 * 1024

MAX_FRAGMENTS = 1024
"""Frames one message may come in. Empty continuation frames add nothing to a message's size, so without
this a client could grow a message's fragment list forever (browsers and Node's ws never fragment)."""

CLOSE_TIMEOUT = 10.0
"""Seconds the server waits for the client's reply to its close frame before closing the socket."""

_pack_close_code = struct.Struct("!H").pack


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked server frame for a close, ping or pong (at most 125 bytes of payload)."""
    return bytes((_FIN | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    # A control frame holds 125 bytes: the code takes two, so the reason is cut to fit (at a character).
    encoded = reason.encode()[:123].decode(errors="ignore").encode()
    return control_frame(OP_CLOSE, _pack_close_code(code) + encoded)


def text_frame_header(length: int) -> bytes:
    header = binary_frame_header(length)
    return bytes((_FIN | OP_TEXT,)) + header[1:]


class FrameError(Exception):
    """The client broke the frame format: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ConnectionContext:
    """What every connection of one server shares: built once, held by each connection in one slot."""

    __slots__ = (
        "app",
        "asgi_version",
        "connections",
        "default_headers",
        "gate",
        "max_buffered",
        "max_size",
        "ping_interval",
        "ping_timeout",
        "poll_clock",
        "tasks",
    )

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any], loop: AbstractEventLoop
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.asgi_version = config.asgi_version
        self.max_size = config.ws_max_size
        self.ping_interval = config.ws_ping_interval if config.ws_ping_interval else None
        self.ping_timeout = config.ws_ping_timeout if config.ws_ping_timeout else None
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        # uvicorn's date header is refreshed each second in this list; it is read when a response goes out.
        self.default_headers = server_state.default_headers
        # Arriving connections start, and detached ones resume, a few dozen a turn.
        self.gate = TurnGate(server_state.tasks)
        self.poll_clock = PollClock(loop)
        # Bytes waiting to be sent past which a ping is answered by dropping the connection.
        self.max_buffered = max_buffered_bytes(app_state)


_contexts: weakref.WeakKeyDictionary[ServerState, ConnectionContext] = weakref.WeakKeyDictionary()


def connection_context(
    config: Config, server_state: ServerState, app_state: dict[str, Any], loop: AbstractEventLoop
) -> ConnectionContext:
    context = _contexts.get(server_state)
    if context is None:
        context = _contexts[server_state] = ConnectionContext(config, server_state, app_state, loop)
    return context


class WebSocketConnection(CollabTransportBase, Protocol):
    """A websocket connection and its ASGI app (see the module docstring)."""

    __slots__ = (
        "_accept_key",
        "_context",
        "_denial",
        "_fragment_opcode",
        "_fragments",
        "_fragments_size",
        "_partial",
        "_read_at",
        "app_state",
        "client",
        "close_timer",
        "disconnected",
        "handshake_complete",
        "last_ping_rtt",
        "loop",
        "ping_sent_at",
        "ping_timer",
        "queue",
        "scope",
        "transport",
        "writable",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: AbstractEventLoop | None = None,
    ) -> None:
        self.loop = _loop or get_event_loop()
        self._context = connection_context(config, server_state, app_state, self.loop)
        self.app_state = app_state
        self.transport: Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.scope: dict[str, Any] | None = None
        self.queue = ReceiveQueue(self.loop)
        self.writable = WritableFlag()
        self.writable.set()
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.read_paused = False
        self.close_timer: TimerHandle | None = None
        self._accept_key: bytes | None = None
        self._denial: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
        # Reading: an incomplete frame, and a fragmented message in progress.
        self._partial: bytearray | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._fragments_size = 0
        self._read_at = 0.0
        # Keepalive, and the ping token bucket.
        self.ping_timer: KeepaliveTimer | None = None
        self.pong_timer: TimerHandle | None = None
        self.pending_ping_payload: bytes | None = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self._ping_tokens = float(PING_BURST)
        self._ping_time = 0.0
        # The collab.transport extension: the app's frame handler, and its resume once detached.
        self._frame_handler: FrameHandler | None = None
        self._resume: Resume | None = None
        self._resume_task: Task[None] | None = None
        self._resume_queued = False

    # -- the opening handshake ------------------------------------------------------------------------

    def upgrade(self, transport: Transport, request: dict[str, Any], target: bytes) -> None:
        """Take over ``transport`` from the HTTP protocol that parsed the upgrade request: ``request`` is
        its ASGI HTTP scope, ``target`` the raw request target. Answers 400/426 to a request that is not
        a valid websocket opening handshake, and otherwise starts the app with ``websocket.connect``."""
        self.transport = transport
        self.client = request.get("client")
        self._context.connections.add(self)  # type: ignore[arg-type]  # uvicorn lists its own protocols only
        refusal = self._check_request(request)
        if refusal is not None:
            self._refuse(*refusal)
            return
        try:
            url = httptools.parse_url(target)
            raw_path = url.path or b"/"
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            self._refuse(400, "invalid request target", [])
            return
        root_path = request.get("root_path", "")
        headers: list[tuple[bytes, bytes]] = request["headers"]
        subprotocols: list[str] = []
        for name, value in headers:
            if name == b"sec-websocket-protocol":
                subprotocols.extend(token.strip() for token in value.decode("latin-1").split(",") if token.strip())
        share_common_headers(headers)
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self._context.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if request.get("scheme") == "https" else "ws",
            "server": request.get("server"),
            "client": self.client,
            "root_path": root_path,
            "path": root_path + (unquote(path) if "%" in path else path),
            "raw_path": root_path.encode("ascii") + raw_path,
            "query_string": url.query or b"",
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {
                "websocket.http.response": {},
                TRANSPORT_EXTENSION: self,  # a transport.CollabTransport
            },
        }
        # Nothing is read until the app accepts: a client may not send frames before the 101 (RFC 6455
        # 4.1), and a pong written now would land in front of it. TCP holds whatever comes meanwhile.
        transport.pause_reading()
        self.queue.put_nowait({"type": "websocket.connect"})
        self._context.gate.arrive(self._start_app, self.loop)

    def _start_app(self) -> None:
        """The gate's turn for this connection: start the app, unless the client has gone meanwhile
        (``connection_lost`` has cleaned up, or will: there is no app to tell)."""
        if self.transport.is_closing():
            return
        task = self.loop.create_task(self.run_asgi())
        self._context.tasks.add(task)
        task.add_done_callback(self._context.tasks.discard)

    def _refuse(self, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.handshake_complete = self.close_sent = True
        self._write_http_response(status, headers, f"Failed to open a WebSocket connection: {text}.\n".encode())
        self.transport.close()

    def _check_request(self, request: dict[str, Any]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why ``request`` is not a websocket opening handshake we accept, or None (RFC 6455 4.2.1)."""
        if request.get("method") != "GET":
            return 400, "the method must be GET", []
        if request.get("http_version", "1.1") != "1.1":
            return 400, "HTTP/1.1 is required", []
        keys = [value for name, value in request["headers"] if name == b"sec-websocket-key"]
        versions = [value for name, value in request["headers"] if name == b"sec-websocket-version"]
        if versions != [b"13"]:
            return 426, "Sec-WebSocket-Version must be 13", [(b"sec-websocket-version", b"13")]
        if len(keys) != 1:
            return 400, "exactly one Sec-WebSocket-Key header is required", []
        try:
            valid = len(base64.b64decode(keys[0], validate=True)) == 16
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            return 400, "Sec-WebSocket-Key must be 16 bytes in base64", []
        self._accept_key = accept_key(keys[0])
        return None

    def _accept(self, message: dict[str, Any]) -> None:
        lines = [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
            cast(bytes, self._accept_key),
            b"\r\n",
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            lines += [b"Sec-WebSocket-Protocol: ", subprotocol.encode("latin-1"), b"\r\n"]
        for name, value in [*self._context.default_headers, *message.get("headers", ())]:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        self._accept_key = None
        self.handshake_complete = True
        if self.transport.is_closing():
            return  # the client left while the app decided; connection_lost tells the app
        self.transport.write(b"".join(lines))
        self.transport.resume_reading()  # paused since the upgrade
        if logger.isEnabledFor(logging.INFO) and self.scope is not None:
            logger.info('%s - "WebSocket %s" [accepted]', self._client_text(), self._path_text())
        self._start_keepalive()

    def _write_http_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the upgrade request with a plain HTTP response, after which the socket closes."""
        given = {name.lower() for name, _ in headers}
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _phrase(status))]
        for name, value in [*self._context.default_headers, *headers]:
            if name.lower() not in (b"content-length", b"connection"):  # ours describe what is written
                lines += [name, b": ", value, b"\r\n"]
        if b"content-type" not in given:
            lines.append(b"content-type: text/plain; charset=utf-8\r\n")
        lines += [b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body]
        self.transport.write(b"".join(lines))

    def _client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"

    def _path_text(self) -> str:
        scope = self.scope or {}
        path: str = scope.get("path", "")
        query: bytes = scope.get("query_string", b"")
        return path + ("?" + query.decode("ascii") if query else "")

    # -- the ASGI app ---------------------------------------------------------------------------------

    async def run_asgi(self) -> None:
        failed = False
        try:
            result = await self._context.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            self._send_500_response()
            failed = True
        else:
            if not self.handshake_complete:
                logger.error("ASGI callable returned without completing handshake.")
                self._send_500_response()
                failed = True
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self._resume is not None:
            # Detached: the scope (2 KB with its headers, and the app's copies of it) goes with the task.
            self.scope = None
            if not failed:
                return
            # The app failed after detaching: the connection closes, and the disconnect runs its resume.
        if self.close_timer is None:
            self.transport.close()

    def _send_500_response(self) -> None:
        if self.handshake_complete or self._denial is not None:
            return
        self.handshake_complete = self.close_sent = True
        self._write_http_response(500, [], b"Internal Server Error")

    async def send(self, message: Any) -> None:
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        kind = message["type"]
        if not self.handshake_complete:
            if self._denial is not None:
                self._continue_denial(message)
            elif kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
                logger.info('%s - "WebSocket %s" 403', self._client_text(), self._path_text())
                self.handshake_complete = self.close_sent = True
                self._write_http_response(403, [], b"")
                self.transport.close()
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                logger.info('%s - "WebSocket %s" %d', self._client_text(), self._path_text(), status)
                self._denial = (status, list(message.get("headers", ())), b"")
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but got '{kind}'."
                )
        elif self.close_sent or self.transport.is_closing():
            # The closing handshake has begun (or the socket is going): nothing more can be sent, and a
            # close has nothing left to do.
            if kind != "websocket.close":
                raise ClientDisconnected()
        elif kind == "websocket.send":
            data = message.get("bytes")
            if data is not None:
                self.transport.writelines((binary_frame_header(len(data)), data))
            else:
                text = message["text"].encode()
                self.transport.writelines((text_frame_header(len(text)), text))
        elif kind == "websocket.close":
            code = message.get("code") or 1000
            reason = message.get("reason") or ""
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.write(close_frame(code, reason))
            self.close_sent = True
            if self.read_paused:  # read on, to see the client's reply
                self.read_paused = False
                self.transport.resume_reading()
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'.")

    def _continue_denial(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind != "websocket.http.response.body":
            raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'.")
        status, headers, body = cast(tuple[int, list[tuple[bytes, bytes]], bytes], self._denial)
        body += message.get("body", b"")
        if message.get("more_body", False):
            self._denial = (status, headers, body)
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        self.handshake_complete = self.close_sent = True
        self._write_http_response(status, headers, body)
        self.transport.close()

    # -- the collab.transport extension (the rest is CollabTransportBase's) ------------------------------

    def _app_tasks(self) -> set[Task[None]]:
        return self._context.tasks

    def _gate(self) -> TurnGate:
        return self._context.gate

    def send_nowait(self, data: bytes, frame: bytes | None = None) -> bool:
        """Write one binary message if the socket can take it now; False means "use the ASGI send"."""
        if self.close_sent or self.disconnected or not self.handshake_complete or not self.writable.is_set():
            return False
        if frame is not None:
            self.transport.write(frame)  # framed once for every peer of a broadcast
        else:
            # Header and payload as two buffers: a large payload is never copied into a frame.
            self.transport.writelines((binary_frame_header(len(data)), data))
        return True

    # -- reading frames -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # The frame handler's budget counts from the start of this poll's reads, shared by every socket.
        self._read_at = self._context.poll_clock.started(self.loop.time())
        buffer: bytes | bytearray = data
        partial = self._partial
        if partial is not None:
            partial += data
            buffer = partial
        try:
            used = self._read_frames(buffer)
        except FrameError as error:
            self._fail(error.code, error.reason)
            return
        if used == len(buffer):
            self._partial = None
        elif partial is not None:
            del partial[:used]
        else:
            self._partial = bytearray(memoryview(data)[used:])

    def _read_frames(self, data: bytes | bytearray) -> int:
        """Handle every complete frame at the start of ``data``; returns how many bytes they took."""
        size = len(data)
        start = 0
        max_size = self._context.max_size
        transport = self.transport
        # Stops once the socket is closing: refused, failed, dropped by the frame handler, or closed.
        while size - start >= 2 and not transport.is_closing():
            first, second = data[start], data[start + 1]
            if not second & 0x80:
                raise FrameError(1002, "incorrect masking")
            if first & 0x70:
                raise FrameError(1002, "reserved bits must be 0")
            opcode = first & 0x0F
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - start < 4:
                    break
                header, length = 4, int.from_bytes(data[start + 2 : start + 4], "big")
            elif length == 127:
                if size - start < 10:
                    break
                header, length = 10, int.from_bytes(data[start + 2 : start + 10], "big")
            fin = first & _FIN
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise FrameError(1002, f"invalid opcode: {opcode}")
                if not fin:
                    raise FrameError(1002, "fragmented control frame")
                if length > 125:
                    raise FrameError(1002, "control frame too long")
            elif opcode == OP_CONTINUATION:
                if self._fragments is None:
                    raise FrameError(1002, "unexpected continuation frame")
                if max_size is not None and self._fragments_size + length > max_size:
                    raise FrameError(1009, f"message over {max_size} bytes")
                if len(self._fragments) >= MAX_FRAGMENTS:
                    raise FrameError(1009, f"message in over {MAX_FRAGMENTS} fragments")
            elif opcode > OP_BINARY:
                raise FrameError(1002, f"invalid opcode: {opcode}")
            elif self._fragments is not None:
                raise FrameError(1002, "expected a continuation frame")
            elif max_size is not None and length > max_size:
                raise FrameError(1009, f"message over {max_size} bytes")
            end = start + header + 4 + length
            if end > size:
                break
            mask = data[start + header : start + header + 4]
            if length < _UNMASK_IN_PLACE:
                payload = apply_mask(data[start + header + 4 : end], mask)
            else:
                # Unmasked from a view of the buffer: a slice would copy megabytes first. The view is
                # released before the caller trims the buffer (a bytearray cannot resize while viewed).
                with memoryview(data) as view, view[start + header + 4 : end] as masked:
                    payload = apply_mask(masked, mask)
            start = end
            if opcode == OP_BINARY and fin:
                self._deliver_binary(payload)
            elif opcode >= OP_CLOSE:
                self._control(opcode, payload)
            else:
                self._fragment(opcode, payload, fin)
        return start

    def _fragment(self, opcode: int, payload: bytes, fin: int) -> None:
        """A text frame, or a frame of a fragmented message."""
        if opcode != OP_CONTINUATION:
            if fin:
                self._deliver_text(payload)
                return
            self._fragments, self._fragment_opcode, self._fragments_size = [payload], opcode, len(payload)
            return
        fragments = cast(list[bytes], self._fragments)
        fragments.append(payload)
        self._fragments_size += len(payload)
        if fin:
            message = b"".join(fragments)
            self._fragments, self._fragments_size = None, 0
            if self._fragment_opcode == OP_TEXT:
                self._deliver_text(message)
            else:
                self._deliver_binary(message)

    def _deliver_binary(self, message: bytes) -> None:
        # While nothing waits in the queue, the app's frame handler may take the message right here.
        if self.close_sent:
            return  # the app is past websocket.close: discard
        handler = self._frame_handler
        if handler is not None and self.queue.empty() and handler(message, self._read_at):
            return
        self._queue_for_app({"type": "websocket.receive", "bytes": message})

    def _deliver_text(self, message: bytes) -> None:
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise FrameError(1007, "invalid UTF-8 in a text message") from None
        self._queue_for_app({"type": "websocket.receive", "text": text})

    def _queue_for_app(self, event: dict[str, Any]) -> None:
        if self.close_sent:
            return  # the app is past websocket.close (or the connection was dropped): discard
        self.queue.put_nowait(event)
        # As uvicorn: read no further while the app has a message waiting, so a client that sends faster
        # than the app reads is held back by TCP instead of growing this queue.
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._answer_ping(payload)
        elif opcode == OP_PONG:
            self._pong(payload)
        else:
            self._close_received(payload)

    def _close_received(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise FrameError(1002, "close frame too short")
        code, reason = 1005, ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code < 5000:
                raise FrameError(1002, f"invalid close code: {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise FrameError(1007, "invalid UTF-8 in the close reason") from None
        if self.close_sent:
            if self.close_timer is not None:  # the client's reply to our close: the handshake is complete
                self._close_now()
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        # Echo the client's close (RFC 6455 5.5.1), then close the socket: the server closes TCP first.
        self.close_sent = True
        self.transport.write(control_frame(OP_CLOSE, payload))
        self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """The client broke the protocol: tell it why, tell the app, and close."""
        if self.close_sent:
            return
        self._fragments, self._partial = None, None
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        self.transport.write(close_frame(code, reason))
        self.transport.close()

    # -- pings, pongs and keepalive ---------------------------------------------------------------------

    def _answer_ping(self, payload: bytes) -> None:
        if not self._ping_refused(self._context.max_buffered):
            self.transport.write(control_frame(OP_PONG, payload))

    def _pong(self, payload: bytes) -> None:
        # Unsolicited pongs, and stale ones whose payload is not the ping in flight, are ignored.
        if self.pending_ping_payload is None or payload != self.pending_ping_payload:
            return
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
            self._schedule_ping()

    def _start_keepalive(self) -> None:
        if self._context.ping_interval:
            self._schedule_ping()

    def _schedule_ping(self) -> None:
        # On the shared keepalive timers: a loop timer per connection costs ten times a slot entry.
        delay = max(0.0, cast(float, self._context.ping_interval) - self.last_ping_rtt)
        self.ping_timer = keepalive_timers(self.loop).call_later(self.loop, delay, self._send_keepalive_ping)

    def _send_keepalive_ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing():
            return
        # A random payload identifies this ping, so that a stale or unsolicited pong is not taken for it.
        self.pending_ping_payload = os.urandom(4)
        self.ping_sent_at = self.loop.time()
        self.transport.write(control_frame(OP_PING, self.pending_ping_payload))
        timeout = self._context.ping_timeout
        if timeout is not None:
            self.pong_timer = self.loop.call_later(timeout, self.keepalive_timeout)
        else:
            self._schedule_ping()

    def _stop_keepalive(self) -> None:
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
        self.pending_ping_payload = None

    # -- the socket's life ----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def shutdown(self) -> None:
        """The server is shutting down: close with 1012 (service restart) so clients reconnect."""
        self._stop_keepalive()
        if self.close_sent:
            self._close_now()
            return
        if self.handshake_complete:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
            self.close_sent = True
            self.transport.write(close_frame(1012))
        else:
            self._send_500_response()
        self.transport.close()

    def _close_now(self) -> None:
        """Close the socket without waiting any longer for the client's reply to our close frame."""
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self.transport.close()

    def eof_received(self) -> None:
        pass  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1005 if self.handshake_complete else 1006})
        self._context.connections.discard(self)
        self.handshake_complete = True
        self.disconnected = True
        # Unblock a send() waiting for the buffer to drain: it never will now.
        self.writable.set()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        # The scope's extension holds this connection, which holds the scope: a cycle only
        # the cyclic GC could free, and a closed connection should go by reference counts alone
        # (collab_server.gc_policy). The app took what it needed from the extension when it joined.
        if self.scope is not None:
            self.scope["extensions"].pop(TRANSPORT_EXTENSION, None)
        self._frame_handler = None  # the same kind of cycle: handler -> peer -> send_nowait -> connection
        self._partial = self._fragments = None
        if exc is None:
            self.transport.close()


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
