"""An admitted peer's time in its room, once the endpoint has let it in: until it ends, its frames go to
the room (``collab_server.reader``); when it ends, it leaves the room and gives back its admission.

It runs in one of two ways:

- **detached** (under our websocket protocols, which offer the ``collab.transport`` extension:
  ``collab_server.connection``, or ``transport.CollabWebSocketProtocol`` with deflate): the endpoint hands
  the session to the connection and returns, so an idle peer holds no task, no coroutine chain, no ASGI
  scope (about half of what an idle connection cost, docs/benchmarks.md). The connection runs ``resume`` in a short
  task whenever something waits for it: frames the reader's ``take`` declined (rate pause, turn budget),
  and in the end the disconnect;
- **in the endpoint's task** (``serve``), under any other ASGI server.
"""

from __future__ import annotations

from collections.abc import Callable

from collab_server.admission import Admission
from collab_server.peer import Peer
from collab_server.reader import FrameReader
from collab_server.room import Room
from collab_server.room_control import RoomControl
from collab_server.rooms import RoomManager
from collab_server.transport import CollabTransport, Receive


class PeerSession:
    """What is left of one connection's endpoint once its peer has joined."""

    __slots__ = ("_address", "_caps", "_control", "_ended", "_peer", "_reader", "_room", "_rooms", "_transport")

    def __init__(
        self,
        peer: Peer,
        room: Room,
        reader: FrameReader,
        *,
        rooms: RoomManager,
        control: RoomControl,
        caps: Admission,
        address: str,
        transport: CollabTransport | None,
    ) -> None:
        self._peer = peer
        self._room = room
        self._reader = reader
        self._rooms = rooms
        self._control = control
        self._caps = caps
        self._address = address
        self._transport = transport
        self._ended = False

    async def serve(self, receive: Receive) -> None:
        """The whole session in the current task: returns when the peer is closed or gone."""
        try:
            await self._reader.run(receive)
        finally:
            await self.end()

    async def resume(self, receive: Receive, idle: Callable[[], bool]) -> bool:
        """A detached connection's turn (``collab_server.transport.Resume``): read what waits; True when
        nothing is left and the peer is still in, False once the session has ended."""
        still_in = False
        try:
            still_in = await self._reader.run(receive, idle)
        finally:
            if not still_in:
                await self.end()
        return still_in

    async def end(self) -> None:
        """Leave the room and give back the admission; once, however often called."""
        if self._ended:
            return
        self._ended = True
        peer, name = self._peer, self._peer.room_name
        try:
            if self._transport is not None:
                self._transport.offer_frames(None)
            self._control.closed(name, peer)
            # Leaves the room (idempotent: a slow-consumer close may have removed the peer already) and
            # broadcasts the removal of its awareness states.
            self._rooms.leave(self._room, peer)
            await peer.wait_closed()
        finally:
            self._caps.release(self._address, name, pending=False)
