"""uvicorn's sans-I/O websocket protocol, plus one ASGI extension: ``collab.transport``.

ASGI gives an app two things it cannot do well at scale:

- ``reset()``: drop a connection whose reader stopped reading. Through ASGI a close frame waits behind the
  full send buffer like any other message, and a plain close leaves the kernel holding every unsent byte.
- ``send_nowait(data)``: write one binary message *now*, without a coroutine or task, when the socket is
  writable. A broadcast to N peers is then N synchronous writes instead of N task wake-ups; it returns
  False (and the caller falls back to the awaited ASGI send) when flow control says to wait.

The endpoint uses the extension only when present, so the app still runs under any ASGI server.

We build on the sans-I/O implementation because it runs keepalive pings from loop timers instead of a
task per connection, and honours the transport's flow control before each send.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

TRANSPORT_EXTENSION = "collab.transport"

_pack_u16 = struct.Struct("!BBH").pack
_pack_u64 = struct.Struct("!BBQ").pack
_FIN_BINARY = 0x82


def binary_frame_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, unfragmented binary frame (server to client) of ``length`` bytes."""
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 1 << 16:
        return _pack_u16(_FIN_BINARY, 126, length)
    return _pack_u64(_FIN_BINARY, 127, length)


class CollabWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The ASGI task was created but has not run yet, so the scope can still be extended.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][TRANSPORT_EXTENSION] = {"reset": self.reset, "send_nowait": self.send_nowait}

    def send_nowait(self, data: bytes) -> bool:
        """Write one binary message if the socket can take it now; False means "use the ASGI send"."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
        ):
            return False
        if self.conn.extensions:
            # permessage-deflate: websockets must compress the payload
            self.conn.send_binary(data)
            self.transport.writelines(self.conn.data_to_send())
        else:
            # Header and payload as two buffers: the payload, shared by every peer of a broadcast, is
            # never copied into a per-peer frame.
            self.transport.writelines((binary_frame_header(len(data)), data))
        return True

    def reset(self) -> None:
        """Drop the connection with a TCP reset. A plain close would leave the kernel holding every
        unsent byte (megabytes, for a stalled reader) until the peer reads them or TCP gives up."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
