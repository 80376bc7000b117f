"""One peer's incoming frames, from the socket to the room, and the close codes for what goes wrong.

A frame is handled in one of two places:

- **in the protocol's data callback** (``FrameReader.take``), the common case: when the connection's
  task is idle and nothing waits in the receive queue, the frame's messages go to the room right there,
  in the same callback that read them off the socket. No queue entry, no future, no task wake-up, and the
  socket is not paused and resumed around it (uvicorn pauses reading while a frame waits for the app).
  The turn budget counts from the start of the loop's poll (``transport.PollClock``), shared by every
  socket read in it: the frames of the sockets read after it is spent wait for their tasks, which the
  server's ``transport.TurnGate`` starts a few dozen per turn;
- **in a task** (``FrameReader.run``), for everything that has to wait: a frame that arrives while the
  peer is held back by its rate limit, the rest of a burst once one loop turn's budget is spent, text
  frames, and the disconnect. On a detached connection (``collab_server.session``) that task exists only
  while such work waits; otherwise it is the endpoint's.

``take`` hands over to the task by returning False: the protocol then queues the frame as usual, which
wakes the task, and the task picks up where ``take`` stopped (the rest of a frame's messages, or a pause
owed after it). While the task has work, ``take`` declines every frame, so the task sees them in order.
Under an ASGI server without the ``collab.transport`` extension only the task runs, with the same rules.

Errors are translated to close codes here (``_close_for``): they close this peer only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from collab_server import metrics
from collab_server.errors import (
    CloseCode,
    DocumentTooLarge,
    LimitExceeded,
    ProtocolError,
    RateExceeded,
    RoomOverloaded,
    StoreOverloaded,
)
from collab_server.frames import FrameGate
from collab_server.peer import Peer
from collab_server.protocol import Message, SyncStep2, SyncUpdate
from collab_server.refusals import refuse
from collab_server.room import Room

logger = logging.getLogger(__name__)

# A receive() that took longer than this waited for the network, so the loop served everyone else.
_REAL_WAIT = 0.0005

# LimitExceeded subclass -> (close code, metric reason)
_LIMIT_CODES: dict[type[LimitExceeded], tuple[CloseCode, str]] = {
    RateExceeded: (CloseCode.RATE_LIMITED, "rate_limited"),
    DocumentTooLarge: (CloseCode.TOO_LARGE, "document_too_large"),
    RoomOverloaded: (CloseCode.OVERLOADED, "awareness_full"),
}

_NO_MESSAGES: Iterator[Message] = iter(())
_FRAMES_IN_TASK = metrics.FRAMES_IN_TASK


class FrameReader:
    """Feeds one peer's frames to its room, in order, within the loop's turn budget and the peer's rates."""

    __slots__ = ("_busy", "_gate", "_handover", "_loop", "_peer", "_room", "_turn_budget")

    def __init__(self, peer: Peer, room: Room, gate: FrameGate, turn_budget: float) -> None:
        self._peer = peer
        self._room = room
        self._gate = gate
        self._turn_budget = turn_budget
        self._loop = asyncio.get_running_loop()  # its time(): a bound method kept per reader costs 64 bytes
        # True while the task has work (a handed-over frame, a pause, a yield): take() then declines.
        self._busy = False
        # What take() left for the task: (the frame it stopped in, the messages it did not handle, the
        # pause owed after them, -1 if not asked yet). The task recognises the frame by identity when the
        # queue returns it.
        self._handover: tuple[bytes, Iterator[Message], float] | None = None

    def take(self, frame: bytes, read_at: float) -> bool:
        """Handle ``frame`` now, in the protocol's data callback (``read_at``: when the budget began, the
        start of the loop's poll under our own protocol, of this callback under the deflate one).

        False: not handled, or not to the end; the caller queues the frame for the task (``run``)."""
        if self._busy or self._loop.time() - read_at > self._turn_budget:
            # The task has frames to see first, or this poll has used its turn: the rest waits for the
            # task, which yields to the loop before it goes on.
            return False
        peer = self._peer
        messages = _NO_MESSAGES
        message: Message | None = None
        try:
            messages = iter(self._gate.admit(frame))
            for message in messages:
                self._handle(message)
                if peer.closed:
                    break
                if self._loop.time() - read_at > self._turn_budget:
                    # A frame of many messages: the task handles the rest after a loop turn (and asks
                    # the gate for the pause owed after the frame: -1).
                    return self._hand_over(frame, messages, -1.0)
            else:
                pause = self._gate.pause()
                if pause:
                    return self._hand_over(frame, _NO_MESSAGES, pause)
        except BaseException as exc:
            if not _close_for(peer, exc, message):
                raise
        if peer.closed:
            # Let the task see it now (and leave the room), not when the close handshake ends.
            return self._hand_over(frame, _NO_MESSAGES, 0.0)
        return True

    def _hand_over(self, frame: bytes, rest: Iterator[Message], pause: float) -> bool:
        self._handover = (frame, rest, pause)
        self._busy = True
        return False

    def _handle(self, message: Message) -> None:
        peer = self._peer
        self._gate.check(message, self._room, can_write=peer.can_write, introduced=peer.client_ids)
        self._room.handle(peer, message)

    async def run(self, receive: Callable[[], Awaitable[Any]], idle: Callable[[], bool] | None = None) -> bool:
        """The connection task's loop: whatever ``take`` declined, then the disconnect. Returns False when
        the peer is closed or gone; with ``idle``, True as soon as ``idle()`` says that nothing waits to be
        received (a detached connection: its task ends, and ``take`` goes on alone)."""
        peer = self._peer
        clock = self._loop.time
        turn_budget = self._turn_budget
        turn_started = clock()
        while not peer.closed:
            before = clock()
            if before - turn_started > turn_budget:
                # One socket read can queue hundreds of frames, and awaiting a queued frame does not
                # yield. After ``turn_budget`` seconds of them, give the loop a turn, so that one busy
                # peer cannot hold up other rooms, the store's commit replies or pings for its burst.
                await asyncio.sleep(0)
                before = turn_started = clock()
            self._busy = False  # from here take() may handle frames again, unless one is queued
            if idle is not None and idle():
                return True
            event = await receive()
            self._busy = True
            if clock() - before > _REAL_WAIT:
                turn_started = clock()  # receive() really waited: the loop ran others meanwhile
            if event["type"] == "websocket.disconnect":
                peer.mark_disconnected(event.get("code"))
                return False
            frame = event.get("bytes")
            if frame is None:
                text = "text frames are not supported: send binary messages"
                refuse(peer, CloseCode.UNSUPPORTED_DATA, "text_frame", text)
                return False
            _FRAMES_IN_TASK.inc()
            handover, self._handover = self._handover, None
            message: Message | None = None
            try:
                if handover is not None and handover[0] is frame:
                    _, messages, pause = handover
                else:
                    messages, pause = iter(self._gate.admit(frame)), -1.0
                for message in messages:
                    self._handle(message)
                    if peer.closed:
                        return False  # too slow to take the replies: nothing more of this frame is worth doing
                    if clock() - turn_started > turn_budget:
                        # The same budget inside a frame: a frame of thousands of messages yields too.
                        await asyncio.sleep(0)
                        turn_started = clock()
                message = None
                if pause < 0:
                    pause = self._gate.pause()
                if pause:
                    # Past its rates: the next frame waits (the peer's sends back up behind its socket).
                    metrics.PEER_SLOWED_SECONDS.inc(pause)
                    await asyncio.sleep(pause)
                    turn_started = clock()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if not _close_for(peer, exc, message):
                    raise
                return False
        return False


def _close_for(peer: Peer, exc: BaseException, message: Message | None) -> bool:
    """Close ``peer`` for ``exc``, raised while handling its ``message``; False if ``exc`` is not ours."""
    if isinstance(exc, ProtocolError):
        refuse(peer, CloseCode.PROTOCOL_ERROR, "protocol_error", f"protocol error: {exc}")
    elif isinstance(exc, LimitExceeded):
        code, reason = _LIMIT_CODES.get(type(exc), (CloseCode.TRY_AGAIN_LATER, "limit"))
        refuse(peer, code, reason, str(exc), quota=True)
    elif isinstance(exc, StoreOverloaded):
        refuse(peer, CloseCode.TRY_AGAIN_LATER, "store_overloaded", "the store is not accepting writes; retry later")
    elif _raised_by_crdt_library(exc):
        if isinstance(message, SyncUpdate | SyncStep2):
            # What this peer sent made the CRDT library fail (a RuntimeError, or pyo3's PanicException,
            # a BaseException): the client's doing, so one line and no traceback.
            refuse(peer, CloseCode.PROTOCOL_ERROR, "update_failed", "update refused: it could not be applied")
        else:
            # Reading the document failed: the room's state is damaged, not this peer's request. A
            # transient code, so that the client comes back once the room is rebuilt.
            refuse(peer, CloseCode.INTERNAL_ERROR, "document_damaged", "the room's document is damaged; retry later")
    elif isinstance(exc, Exception):
        # A bug in handling one frame must cost this peer its connection, not the room or server.
        metrics.PEERS_CLOSED.labels("internal_error").inc()
        logger.exception("error handling a frame from peer %d in room %r", peer.id, peer.room_name)
        peer.close(CloseCode.INTERNAL_ERROR, "internal error")
    else:
        return False
    return True


def _raised_by_crdt_library(exc: BaseException) -> bool:
    """Did ``exc`` come out of pycrdt (its Python wrapper is the innermost frame)?"""
    if type(exc).__name__ == "PanicException":
        return True
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    traceback = exc.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return f"{os.sep}pycrdt{os.sep}" in traceback.tb_frame.f_code.co_filename
