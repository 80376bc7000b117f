"""Applies room events to the sockets this replica holds: live revocation and room deletion.

Open sockets of an access-controlled server are registered here with their principal. When a room's
access changes (participant removed, role lowered, room made private, password changed) every replica
re-decides each of its sockets in that room: refused ones are closed with 4403, the others get the
role's write right (a lowered editor keeps reading, read-only). A deleted room's sockets are closed with
4404 and the room leaves memory without being saved; its stored document is deleted. A socket is closed
with 4401 when the token that opened it expires (the client reconnects with a fresh one).

Room events travel by Redis pub/sub, which loses messages while a connection is down; every
``recheck_interval`` seconds each replica therefore re-decides all its open sockets anyway, so a lost
revocation is applied late rather than never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from collab_server.access import Access, decide
from collab_server.errors import CloseCode, Forbidden, RoomNotFound
from collab_server.peer import Peer
from collab_server.principal import Principal
from collab_server.rooms import RoomManager
from collab_server.security import security_event
from persistence.base import DocumentStore, UpdateWriter
from persistence.room_store import Participant
from presence.room_events import RoomEvent, RoomEvents

logger = logging.getLogger(__name__)


class RoomControl:
    """This replica's open sockets by room, and what room events do to them."""

    def __init__(
        self,
        access: Access,
        manager: RoomManager,
        store: DocumentStore,
        writer: UpdateWriter,
        events: RoomEvents,
        *,
        on_deleted: Callable[[str], Awaitable[object]] | None = None,
        recheck_interval: float = 30.0,
    ) -> None:
        self._access = access
        self._manager = manager
        self._store = store
        self._writer = writer
        self.events = events
        # What else a deleted room ends (its waiting export jobs fail with room_not_found).
        self._on_deleted = on_deleted
        self._open: dict[str, dict[Peer, Principal]] = {}
        self._expiries: dict[Peer, asyncio.TimerHandle] = {}
        self._recheck_interval = recheck_interval
        self._rechecking: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RoomControl(rooms={len(self._open)})"

    async def start(self) -> None:
        await self.events.start(self.handle)
        self._rechecking = asyncio.get_running_loop().create_task(self._recheck(), name="access-recheck")

    async def close(self) -> None:
        if self._rechecking is not None:
            self._rechecking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rechecking
        await self.events.close()

    async def _recheck(self) -> None:
        while True:
            await asyncio.sleep(self._recheck_interval)
            for room in list(self._open):
                try:
                    await self._redecide(room)
                except Exception as exc:  # a store hiccup: try again next round
                    logger.warning("access recheck of room %r failed: %s", room, exc, extra={"room": room})

    # -- sockets -------------------------------------------------------------------------------

    def opened(self, room: str, peer: Peer, principal: Principal) -> None:
        self._open.setdefault(room, {})[peer] = principal
        if principal.expires_at is not None:
            loop = asyncio.get_running_loop()
            delay = max(principal.expires_at - time.time(), 0.0)
            self._expiries[peer] = loop.call_later(delay, self._expired, room, peer, principal)

    def _expired(self, room: str, peer: Peer, principal: Principal) -> None:
        self._expiries.pop(peer, None)
        security_event("ws_token_expired", f"the token of {principal.user!r} expired", room=room)
        peer.close(CloseCode.UNAUTHENTICATED, "token expired: reconnect with a fresh token")

    def closed(self, room: str, peer: Peer) -> None:
        expiry = self._expiries.pop(peer, None)
        if expiry is not None:
            expiry.cancel()
        sockets = self._open.get(room)
        if sockets is not None:
            sockets.pop(peer, None)
            if not sockets:
                del self._open[room]

    # -- what REST calls -----------------------------------------------------------------------

    async def changed(self, room: str) -> None:
        """The room's access changed: re-decide its sockets here and on every other replica."""
        await self.events.publish(RoomEvent(room, "changed"))

    async def deleted(self, room: str) -> None:
        """The room's record is gone: close its sockets everywhere and delete its stored document."""
        await self.events.publish(RoomEvent(room, "deleted"))
        await self._store.delete(room)  # even where no replica held it loaded
        if self._on_deleted is not None:
            await self._on_deleted(room)

    # -- events --------------------------------------------------------------------------------

    async def handle(self, event: RoomEvent) -> None:
        if event.kind == "deleted":
            await self._drop(event.room)
        else:
            await self._redecide(event.room)

    async def _redecide(self, room_id: str) -> None:
        sockets = self._open.get(room_id)
        if not sockets:
            return
        room = await self._access.rooms.get(room_id)
        rows: dict[str, Participant | None] = {}
        for peer, principal in list(sockets.items()):
            if room is not None and principal.user not in rows:
                rows[principal.user] = await self._access.rooms.participant(room_id, principal.user)
            try:
                role = decide(room_id, room, rows.get(principal.user), principal, self._access.mode)
            except Forbidden as exc:
                security_event("revoked", str(exc), room=room_id)
                peer.close(CloseCode.FORBIDDEN, str(exc))
            except RoomNotFound:
                peer.close(CloseCode.NO_SUCH_ROOM, "no such room")
            else:
                if peer.can_write and not role.can_write:
                    security_event("downgraded", "now read-only", room=room_id)
                peer.can_write = role.can_write

    async def _drop(self, room_id: str) -> None:
        loaded = self._manager.get(room_id)
        peers = set(self._open.pop(room_id, {}))
        if loaded is not None:
            peers |= set(loaded.peers)
        for peer in peers:
            peer.close(CloseCode.NO_SUCH_ROOM, "this room was deleted")
        if loaded is not None:
            await self._manager.discard(room_id)
            # What the room had not written yet is committed now, then deleted with the rest.
            await self._writer.flush(timeout=10.0)
            await self._store.delete(room_id)
            logger.info("room %r deleted: %d sockets closed", room_id, len(peers), extra={"room": room_id})
