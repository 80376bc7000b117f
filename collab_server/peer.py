"""A peer: one socket in one room, with a bounded send queue.

Broadcasting never awaits: ``send`` only queues, and a pump task drains the queue into the socket. The
pump exists only while there is something to send, so an idle connection costs no task. When a peer
falls too far behind (more than ``max_messages`` or ``max_bytes`` waiting), it is closed with 1013, a
code the y-websocket client retries: it comes back and resyncs what it missed, and the room never waits
for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from collab_server import metrics
from collab_server.errors import CloseCode

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class PeerSocket(Protocol):
    """What a peer needs of its connection. Our websocket protocols are one themselves (the
    ``collab.transport`` extension, ``collab_server.transport.CollabTransport``), so a peer holds one
    reference instead of three bound methods; ``AsgiSocket`` makes one of a plain ASGI ``send``."""

    async def send(self, message: Any) -> None:
        """The ASGI send: ``websocket.send`` and ``websocket.close`` events."""

    def send_nowait(self, data: bytes, frame: bytes | None = None) -> bool:
        """Write one binary message now if the socket can take it; False: use ``send``. ``frame``: ``data``
        already framed for the websocket (``collab_server.transport.binary_frame``), or None."""

    def reset(self) -> None:
        """Drop the connection at once (a reader that does not take even the close frame)."""


class AsgiSocket:
    """A ``PeerSocket`` over a plain ASGI ``send`` (an ASGI server without ``collab.transport``): every
    message goes through ``send``, and a reset is left to the server."""

    __slots__ = ("_send",)

    def __init__(self, send: ASGISend) -> None:
        self._send = send

    async def send(self, message: Any) -> None:
        await self._send(message)

    def send_nowait(self, data: bytes, frame: bytes | None = None) -> bool:
        return False

    def reset(self) -> None:
        pass

# How long a close frame may take to leave; a reader that stalls past it has its connection aborted.
_CLOSE_TIMEOUT = 3.0
_ids = itertools.count(1)


class Peer:
    """One websocket in one room."""

    __slots__ = (
        "_closer",
        "_pump",
        "_queue",
        "_queued_bytes",
        "_socket",
        "can_write",
        "client_ids",
        "close_code",
        "closed",
        "id",
        "max_bytes",
        "max_messages",
        "on_close",
        "room_name",
    )

    def __init__(
        self,
        socket: PeerSocket,
        *,
        room_name: str,
        max_messages: int = 2000,
        max_bytes: int = 64 * 1024 * 1024,
        can_write: bool = True,
    ) -> None:
        self.id = next(_ids)
        self.room_name = room_name
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.can_write = can_write
        # The awareness ids this socket introduced (one for a y-websocket client, at most
        # max_awareness_clients_per_peer): a tuple, 48 bytes where a set would take 216.
        self.client_ids: tuple[int, ...] = ()
        self.closed = False
        self.close_code: int | None = None
        self.on_close: Callable[[Peer], None] | None = None
        self._socket = socket
        # Created only while messages wait: an idle peer (the common case) carries no 760-byte deque.
        self._queue: deque[bytes] | None = None
        self._queued_bytes = 0
        self._pump: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Peer(id={self.id}, room={self.room_name!r}, queued={len(self._queue or ())}, closed={self.closed})"

    def introduced(self, client_id: int) -> None:
        """This socket brought awareness client ``client_id`` into its room."""
        if client_id not in self.client_ids:
            self.client_ids += (client_id,)

    def removed(self, client_id: int) -> None:
        """Awareness client ``client_id`` left the room."""
        if client_id in self.client_ids:
            self.client_ids = tuple(known for known in self.client_ids if known != client_id)

    def send(self, message: bytes, frame: bytes | None = None) -> None:
        """Queue one message; closes the peer as too slow when its queue is over the limit. ``frame``:
        ``message`` already framed, shared by the peers of a broadcast (used only if written at once)."""
        if self.closed:
            return
        queue = self._queue
        # Fast path: nothing waiting and the socket writable, so write now with no task at all.
        if not queue and self._pump is None and self._socket.send_nowait(message, frame):
            return
        if queue is None:
            queue = self._queue = deque()
        # One message is always accepted into an empty queue, however large (a cold sync's step2).
        if queue and (len(queue) >= self.max_messages or self._queued_bytes + len(message) > self.max_bytes):
            metrics.PEERS_CLOSED.labels("slow_consumer").inc()
            logger.warning(
                "closing slow peer %d in room %r: %d messages (%d bytes) waiting",
                self.id,
                self.room_name,
                len(queue),
                self._queued_bytes,
                extra={"room": self.room_name, "peer": self.id},
            )
            self.close(CloseCode.TRY_AGAIN_LATER, "slow consumer: too far behind, reconnect to resync")
            return
        queue.append(message)
        self._queued_bytes += len(message)
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        queue = self._queue
        try:
            while queue:
                message = queue.popleft()
                self._queued_bytes -= len(message)
                await self._socket.send({"type": "websocket.send", "bytes": message})
        except asyncio.CancelledError:
            raise
        except Exception:
            # The client went away mid-send; the read loop sees the disconnect and cleans up.
            self.mark_disconnected()
        finally:
            self._pump = None
            if not self._queue:
                self._queue = None

    def close(self, code: int, reason: str = "") -> None:
        """Close this peer (only this one) with ``code``; safe to call more than once."""
        if self.closed:
            return
        self._stop(code)
        self._closer = asyncio.get_running_loop().create_task(self._send_close(code, reason))

    def mark_disconnected(self, code: int | None = None) -> None:
        """The socket is gone already (the client closed it): stop sending, notify the room."""
        if not self.closed:
            self._stop(code)

    def _stop(self, code: int | None) -> None:
        self.closed = True
        self.close_code = code
        self._queue = None
        self._queued_bytes = 0
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self.on_close is not None:
            self.on_close(self)

    async def _send_close(self, code: int, reason: str) -> None:
        # Close reasons are limited to 123 bytes of UTF-8 by RFC 6455.
        reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
        try:
            await asyncio.wait_for(
                self._socket.send({"type": "websocket.close", "code": code, "reason": reason}), _CLOSE_TIMEOUT
            )
        except Exception:
            # A reader that does not take even the close frame is cut off at the transport.
            self._socket.reset()

    async def wait_closed(self) -> None:
        """Wait for the close frame to leave (the peer's session must not end before it has: the
        connection is closed when it ends)."""
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)
