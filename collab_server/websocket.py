"""The websocket endpoint ``/ws/{room}``: one peer's life, from handshake to close.

Errors are translated to close codes (``collab_server.errors.CloseCode``) here and nowhere else, and they
close this peer only. Close reasons say what the client did wrong, in our words, never a library's
message. Each refusal is counted (``collab_peers_closed_total{reason}``, quotas also in
``collab_quota_refusals_total{quota}``) and logged in one line, rate-limited per reason.

Before the socket is even accepted, the connection caps (collab_server.admission) may turn it down: then
the upgrade is answered with HTTP 503 or 429 and a Retry-After, and no socket exists to close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from collab_server import metrics
from collab_server.access import Access
from collab_server.admission import Admission, Refusal
from collab_server.errors import (
    AuthError,
    AuthUnavailable,
    CloseCode,
    CorruptDocument,
    DocumentTooLarge,
    Forbidden,
    LimitExceeded,
    ProtocolError,
    RateExceeded,
    RoomNotFound,
    RoomOverloaded,
    StoreError,
    StoreOverloaded,
)
from collab_server.frames import FrameGate
from collab_server.limits import Quotas
from collab_server.names import room_name, room_name_problem
from collab_server.peer import Peer
from collab_server.protocol import FrameLimits, Message, SyncStep2, SyncUpdate
from collab_server.refusals import log_refusal, refuse
from collab_server.room import Room
from collab_server.room_control import RoomControl
from collab_server.rooms import RoomManager
from collab_server.security import security_event
from collab_server.settings import Settings
from collab_server.transport import TRANSPORT_EXTENSION

logger = logging.getLogger(__name__)

__all__ = ["requested_room", "room_endpoint", "room_name_problem"]

# A receive() that took longer than this waited for the network, so the loop served everyone else.
_REAL_WAIT = 0.0005
_ROOM_PREFIX = b"/ws/"
# The ASGI extension that lets an app answer a websocket upgrade with an HTTP response (uvicorn has it).
DENIAL_EXTENSION = "websocket.http.response"

# LimitExceeded subclass -> (close code, metric reason)
_LIMIT_CODES: dict[type[LimitExceeded], tuple[CloseCode, str]] = {
    RateExceeded: (CloseCode.RATE_LIMITED, "rate_limited"),
    DocumentTooLarge: (CloseCode.TOO_LARGE, "document_too_large"),
    RoomOverloaded: (CloseCode.OVERLOADED, "awareness_full"),
}


def requested_room(scope: Mapping[str, Any]) -> tuple[str, str | None]:
    """The room a websocket asks for, decoded from the raw path, and why it is refused (or None)."""
    raw: bytes | None = scope.get("raw_path")
    root = scope.get("root_path", "").encode("utf-8")
    if raw is not None and raw.startswith(root + _ROOM_PREFIX):
        return room_name(raw[len(root) + len(_ROOM_PREFIX) :].split(b"?", 1)[0])
    # An ASGI server that gives no raw path: take its decoded one.
    name = unicodedata.normalize("NFC", scope["path_params"]["room"])
    return name, room_name_problem(name)


def query_token(query_string: bytes) -> str | None:
    """The ``token`` parameter of the URL (the y-websocket provider's ``params``), if any."""
    if b"token=" not in query_string:
        return None
    try:
        values = parse_qs(query_string.decode("latin-1"), max_num_fields=20).get("token", [])
    except ValueError:  # too many fields: refused as carrying no token
        return None
    return values[0] if values else None


async def room_endpoint(websocket: WebSocket) -> None:
    rooms: RoomManager = websocket.state.rooms
    settings: Settings = websocket.state.settings
    quotas: Quotas = websocket.state.quotas
    caps: Admission = websocket.state.admission
    name, problem = requested_room(websocket.scope)
    address = websocket.client.host if websocket.client else ""
    # The connection caps first, before the socket is accepted: a refusal costs no room, no document byte.
    refused = caps.admit(address, name)
    if refused is not None:
        await _deny(websocket, refused, address)
        return
    pending = True  # counted as waiting to join until the room has it
    try:
        await websocket.accept()
        if problem is not None:
            metrics.PEERS_CLOSED.labels("bad_room_name").inc()
            log_refusal("bad_room_name", "refused a socket: %s", problem)
            await websocket.close(CloseCode.PROTOCOL_ERROR, problem)
            return
        access: Access = websocket.state.access
        control: RoomControl = websocket.state.room_control
        # Decided before the room is loaded and before any document byte is sent.
        refusal = None
        try:
            admission = await access.admit(name, query_token(websocket.scope.get("query_string", b"")))
        except AuthUnavailable as exc:
            refusal = (CloseCode.TRY_AGAIN_LATER, "unavailable", str(exc))
        except Forbidden as exc:
            refusal = (CloseCode.FORBIDDEN, "forbidden", str(exc))
        except AuthError as exc:
            refusal = (CloseCode.UNAUTHENTICATED, "unauthenticated", str(exc))
        except RoomNotFound:
            refusal = (CloseCode.NO_SUCH_ROOM, "no_such_room", "no such room")
        except StoreError:
            refusal = (CloseCode.INTERNAL_ERROR, "load_failed", "room access could not be checked")
        if refusal is not None:
            code, kind, reason = refusal
            metrics.PEERS_CLOSED.labels(kind).inc()
            client = websocket.client.host if websocket.client else None
            security_event(f"ws_{kind}", reason, room=name, client=client)
            await websocket.close(code, reason)
            return
        if rooms.get(name) is None:
            if not quotas.room_loads.take(address):
                text = f"opening rooms faster than {settings.room_loads_per_minute} per minute"
                metrics.PEERS_CLOSED.labels("room_loads").inc()
                metrics.QUOTA_REFUSALS.labels("room_loads").inc()
                log_refusal("room_loads", "refused a socket from %s: %s", address, text)
                await websocket.close(CloseCode.RATE_LIMITED, text)
                return

        transport = websocket.scope.get("extensions", {}).get(TRANSPORT_EXTENSION, {})
        peer = Peer(
            websocket.send,
            room_name=name,
            max_messages=settings.send_queue_messages,
            max_bytes=settings.send_queue_bytes,
            abort=transport.get("reset"),
            send_nowait=transport.get("send_nowait"),
            can_write=admission.role.can_write,
        )
        try:
            room = await rooms.join(name, peer)
        except (StoreError, TimeoutError) as exc:
            metrics.PEERS_CLOSED.labels("load_failed").inc()
            corrupt = isinstance(exc, CorruptDocument)
            reason = "room could not be loaded" + (": stored document is corrupt" if corrupt else "")
            await websocket.close(CloseCode.INTERNAL_ERROR, reason)
            return
        caps.joined()
        pending = False

        gate = FrameGate(
            _frame_limits(settings),
            quotas.peer_rates(),
            quotas.document_sizes,
            settings.max_awareness_states,
            settings.max_awareness_clients_per_peer,
        )
        if access.enabled:
            control.opened(name, peer, admission.principal)
        try:
            for message in room.welcome():
                peer.send(message)
            await _read_loop(websocket, peer, room, gate, settings.turn_budget_ms / 1000)
        finally:
            control.closed(name, peer)
            # Leaves the room (idempotent: a slow-consumer close may have removed the peer already) and
            # broadcasts the removal of its awareness states.
            rooms.leave(room, peer)
            await peer.wait_closed()
    except WebSocketDisconnect:
        # The client left while it was being refused (a close to a gone client raises this): nothing to
        # tell it, and nothing to log; the refusal itself was counted and logged above.
        pass
    finally:
        caps.release(address, name, pending=pending)


async def _deny(websocket: WebSocket, refused: Refusal, address: str) -> None:
    """Answer the upgrade with ``refused``'s HTTP status (and Retry-After) instead of accepting it. Under an
    ASGI server without the denial-response extension: accept, then close with the matching transient code."""
    log_refusal(refused.reason, "refused a socket from %s (HTTP %d): %s", address, refused.status, refused.text)
    if DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": str(refused.retry_after)}
        await websocket.send_denial_response(PlainTextResponse(refused.text + "\n", refused.status, headers=headers))
        return
    await websocket.accept()
    code = CloseCode.RATE_LIMITED if refused.status == 429 else CloseCode.TRY_AGAIN_LATER
    await websocket.close(code, refused.text)


def _frame_limits(settings: Settings) -> FrameLimits:
    return FrameLimits(
        messages=settings.max_messages_per_frame,
        state_vector_clients=settings.max_state_vector_clients,
        awareness_entries=settings.max_awareness_entries,
        awareness_state_bytes=settings.max_awareness_state_bytes,
        awareness_depth=settings.max_awareness_depth,
    )


async def _read_loop(websocket: WebSocket, peer: Peer, room: Room, gate: FrameGate, turn_budget: float) -> None:
    receive = websocket.receive
    handle = room.handle
    clock = asyncio.get_running_loop().time
    turn_started = clock()
    while not peer.closed:
        before = clock()
        if before - turn_started > turn_budget:
            # One socket read can queue hundreds of frames, and awaiting a queued frame does not yield.
            # After ``turn_budget`` seconds of them, give the loop a turn, so that one busy peer cannot
            # hold up other rooms, the store's commit replies or pings for its whole burst.
            await asyncio.sleep(0)
            before = turn_started = clock()
        event = await receive()
        if clock() - before > _REAL_WAIT:
            turn_started = clock()  # receive() really waited: the loop ran others meanwhile
        if event["type"] == "websocket.disconnect":
            peer.mark_disconnected(event.get("code"))
            return
        frame = event.get("bytes")
        if frame is None:
            text = "text frames are not supported: send binary messages"
            refuse(peer, CloseCode.UNSUPPORTED_DATA, "text_frame", text)
            return
        message: Message | None = None
        try:
            for message in gate.admit(frame):
                gate.check(message, room, can_write=peer.can_write, introduced=peer.client_ids)
                handle(peer, message)
                if peer.closed:
                    return  # too slow to take the replies: nothing more of this frame is worth doing
                if clock() - turn_started > turn_budget:
                    # The same budget inside a frame: a frame of thousands of messages yields too.
                    await asyncio.sleep(0)
                    turn_started = clock()
            message = None
            pause = gate.pause()
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
            return


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
