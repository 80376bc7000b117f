"""uvicorn's sans-I/O websocket protocol, plus one ASGI extension: ``collab.abort``.

ASGI offers no way to drop a connection whose reader has stopped reading: a close frame waits behind the
full send buffer like any other message. The server needs that for slow consumers and dead sockets, so
this subclass puts the transport's ``abort`` into ``scope["extensions"]``. The endpoint uses it only when
present, so the app still runs under any ASGI server (and in tests) without it.

We build on the sans-I/O implementation because it runs keepalive pings from loop timers instead of a
task per connection, and waits for the transport's flow control before each send (measured cheaper per
idle connection, see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

ABORT_EXTENSION = "collab.abort"


class CollabWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The ASGI task was created but has not run yet, so the scope can still be extended.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = {"abort": self.reset}

    def reset(self) -> None:
        """Drop the connection with a TCP reset. A plain close would leave the kernel holding every
        unsent byte (megabytes, for a stalled reader) until the peer reads them or TCP gives up."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
