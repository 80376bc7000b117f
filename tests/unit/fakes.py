"""Small real implementations for unit tests: a socket that records what it is sent, and a sink."""

from __future__ import annotations

import asyncio
from typing import Any

from pycrdt import Doc

from collab_server.crdt.local import InProcessEngine
from collab_server.peer import Peer
from collab_server.protocol import Message, decode_frame
from collab_server.room import Room


class RecordingSocket:
    """Stands in for one websocket (a ``collab_server.peer.PeerSocket``); ``stalled`` makes every send hang;
    ``writable`` takes messages at once (``send_nowait``), as our protocols do while the socket keeps up."""

    def __init__(self, *, stalled: bool = False, writable: bool = False) -> None:
        self.frames: list[bytes] = []
        self.written_frames: list[bytes | None] = []  # the ``frame`` of each message taken at once
        self._writable = writable
        self.closes: list[tuple[int, str]] = []
        self.aborted = False
        self._release = asyncio.Event()
        if not stalled:
            self._release.set()

    async def send(self, event: dict[str, Any]) -> None:
        await self._release.wait()
        if event["type"] == "websocket.send":
            self.frames.append(event["bytes"])
        elif event["type"] == "websocket.close":
            self.closes.append((event["code"], event["reason"]))

    def send_nowait(self, data: bytes, frame: bytes | None = None) -> bool:
        if not self._writable:
            return False  # every message goes through send(), as under a plain ASGI server
        self.frames.append(data)
        self.written_frames.append(frame)
        return True

    def reset(self) -> None:
        self.aborted = True

    def messages(self) -> list[Message]:
        return [message for frame in self.frames for message in decode_frame(frame)]


class RecordingSink:
    def __init__(self, *, accepting: bool = True) -> None:
        self.updates: list[bytes] = []
        self.awareness: list[bytes] = []
        self.accepting = accepting
        self.unavailable = False

    def accepts(self, nbytes: int) -> bool:
        return self.accepting

    def local_update(self, room: Room, update: bytes) -> None:
        self.updates.append(update)

    def local_awareness(self, room: Room, message: bytes) -> None:
        self.awareness.append(message)

    def room_unavailable(self, room: Room) -> None:
        self.unavailable = True


def make_peer(
    room: Room, *, stalled: bool = False, writable: bool = False, **limits: Any
) -> tuple[Peer, RecordingSocket]:
    socket = RecordingSocket(stalled=stalled, writable=writable)
    peer = Peer(socket, room_name=room.name, **limits)
    room.add(peer)
    peer.on_close = room.remove  # what RoomManager.join wires up (plus its own bookkeeping)
    return peer, socket


def make_room(sink: RecordingSink | None = None, engine: InProcessEngine | None = None) -> tuple[Room, RecordingSink]:
    sink = sink or RecordingSink()
    engine = engine or InProcessEngine()
    engine.documents.load("unit", None, [])
    return Room("unit", engine, sink), sink


async def settle() -> None:
    """Let call_soon flushes and pump tasks run (a few loop iterations; no wall-clock wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


def doc_of(room: Room) -> Doc[Any]:
    """The document of a room on an ``InProcessEngine`` (read it only: the engine owns it)."""
    assert isinstance(room.engine, InProcessEngine)
    return room.engine.documents.rooms[room.name].live()


class ManualClock:
    """A clock that moves only when a test moves it (``now``): give it where code takes a ``clock``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
