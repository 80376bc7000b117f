"""The websocket endpoint ``/ws/{room}``: a peer's way in, from handshake to joining its room; from there
its ``PeerSession`` (collab_server.session) carries it to the close, detached from this endpoint's task
where the server allows it.

Errors are translated to close codes (``collab_server.errors.CloseCode``) here, and for what a peer's
frames cause in ``collab_server.reader``; they close this peer only. Close reasons say what the client
did wrong, in our words, never a library's message. Each refusal is counted
(``collab_peers_closed_total{reason}``, quotas also in ``collab_quota_refusals_total{quota}``) and logged
in one line, rate-limited per reason.

Before the socket is even accepted, the connection caps (collab_server.admission) may turn it down: then
the upgrade is answered with HTTP 503 or 429 and a Retry-After, and no socket exists to close.
"""

from __future__ import annotations

import functools
import logging
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
    Forbidden,
    RoomNotFound,
    StoreError,
)
from collab_server.frames import FrameGate
from collab_server.limits import Quotas
from collab_server.names import room_name, room_name_problem
from collab_server.peer import AsgiSocket, Peer
from collab_server.protocol import FrameLimits
from collab_server.reader import FrameReader
from collab_server.refusals import log_refusal
from collab_server.room_control import RoomControl
from collab_server.rooms import RoomManager
from collab_server.security import security_event
from collab_server.session import PeerSession
from collab_server.settings import Settings
from collab_server.transport import TRANSPORT_EXTENSION, CollabTransport

logger = logging.getLogger(__name__)

__all__ = ["requested_room", "room_endpoint", "room_name_problem"]

_ROOM_PREFIX = b"/ws/"
# The ASGI extension that lets an app answer a websocket upgrade with an HTTP response (uvicorn has it).
DENIAL_EXTENSION = "websocket.http.response"


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
    handed_over = False  # once True, the peer's session gives the admission back
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

        transport: CollabTransport | None = websocket.scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
        peer = Peer(
            # The connection itself where it offers the extension (its send, not Starlette's: that holds the
            # WebSocket, and with it the scope, which a detached connection lets go of).
            transport if transport is not None else AsgiSocket(websocket.send),
            room_name=name,
            max_messages=settings.send_queue_messages,
            max_bytes=settings.send_queue_bytes,
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
        reader = FrameReader(peer, room, gate, settings.turn_budget_ms / 1000)
        # From here the session leaves the room and gives back the admission when it ends.
        session = PeerSession(
            peer, room, reader, rooms=rooms, control=control, caps=caps, address=address, transport=transport
        )
        handed_over = True
        try:
            for message in room.welcome():
                peer.send(message)
            if transport is not None:
                # From here frames are handled in the read callback while nothing waits (reader.py).
                transport.offer_frames(reader.take)
        except BaseException:
            await session.end()
            raise
        if transport is not None:
            # This task ends here; the connection runs the session when something waits for it.
            transport.detach(session.resume)
            return
        await session.serve(websocket.receive)
    except WebSocketDisconnect:
        # The client left while it was being refused (a close to a gone client raises this): nothing to
        # tell it, and nothing to log; the refusal itself was counted and logged above.
        pass
    finally:
        if not handed_over:
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


@functools.cache
def _frame_limits(settings: Settings) -> FrameLimits:
    """The decoding bounds (one object for every peer of a server: they depend only on its settings)."""
    return FrameLimits(
        messages=settings.max_messages_per_frame,
        state_vector_clients=settings.max_state_vector_clients,
        awareness_entries=settings.max_awareness_entries,
        awareness_state_bytes=settings.max_awareness_state_bytes,
        awareness_depth=settings.max_awareness_depth,
    )
