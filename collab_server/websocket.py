"""The websocket endpoint ``/ws/{room}``: one peer's life, from handshake to close.

Errors are translated to close codes (``collab_server.errors.CloseCode``) here and nowhere else, and they
close this peer only.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from urllib.parse import parse_qs

from starlette.websockets import WebSocket

from collab_server import metrics
from collab_server.access import Access
from collab_server.errors import (
    AuthError,
    AuthUnavailable,
    CloseCode,
    CorruptDocument,
    Forbidden,
    ProtocolError,
    RoomNotFound,
    StoreError,
    StoreOverloaded,
)
from collab_server.peer import Peer
from collab_server.room import Room
from collab_server.room_control import RoomControl
from collab_server.rooms import RoomManager
from collab_server.security import security_event
from collab_server.settings import Settings
from collab_server.transport import TRANSPORT_EXTENSION

logger = logging.getLogger(__name__)

MAX_ROOM_NAME_BYTES = 512
# A receive() that took longer than this waited for the network, so the loop served everyone else.
_REAL_WAIT = 0.0005


def room_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a room name, or None if it can."""
    if not name:
        return "room name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_ROOM_NAME_BYTES:
        return f"room name is longer than {MAX_ROOM_NAME_BYTES} bytes"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "room name contains control characters"
    return None


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
    # The path convertor hands over the rest of the path, already percent-decoded by the server.
    name = websocket.path_params["room"]
    await websocket.accept()
    problem = room_name_problem(name)
    if problem is not None:
        metrics.PEERS_CLOSED.labels("bad_room_name").inc()
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

    if access.enabled:
        control.opened(name, peer, admission.principal)
    try:
        for message in room.welcome():
            peer.send(message)
        await _read_loop(websocket, peer, room, settings.turn_budget_ms / 1000)
    finally:
        control.closed(name, peer)
        # Leaves the room (idempotent: a slow-consumer close may have removed the peer already) and
        # broadcasts the removal of its awareness states.
        rooms.leave(room, peer)
        await peer.wait_closed()


async def _read_loop(websocket: WebSocket, peer: Peer, room: Room, turn_budget: float) -> None:
    receive = websocket.receive
    handle = room.receive
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
            metrics.PEERS_CLOSED.labels("text_frame").inc()
            peer.close(CloseCode.UNSUPPORTED_DATA, "text frames are not supported: send binary y-websocket messages")
            return
        try:
            handle(peer, frame)
        except ProtocolError as exc:
            metrics.PEERS_CLOSED.labels("protocol_error").inc()
            logger.info("peer %d in room %r sent a malformed frame: %s", peer.id, peer.room_name, exc)
            peer.close(CloseCode.PROTOCOL_ERROR, f"protocol error: {exc}")
            return
        except StoreOverloaded:
            metrics.PEERS_CLOSED.labels("store_overloaded").inc()
            peer.close(CloseCode.TRY_AGAIN_LATER, "the store is not accepting writes; retry later")
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in handling one frame must cost this peer its connection, not the room or server.
            metrics.PEERS_CLOSED.labels("internal_error").inc()
            logger.exception("error handling a frame from peer %d in room %r", peer.id, peer.room_name)
            peer.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
