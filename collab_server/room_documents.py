"""A room's document over REST: read it, write to it, keep named versions, restore one. No HTTP here.

Every call on the live document goes through ``RoomManager.use``: the room is loaded if this replica does
not hold it (sharing a load in flight with joining peers) and unloads after the grace period when neither a
peer nor a call holds it. A write is applied like a peer's update but with the server's own origin
(``origins.LOCAL``): the CRDT engine accepts or refuses it first, then it is broadcast to every peer, stored
through the group commit, and published to the other replicas. Refused bytes change nothing anywhere.

Anything that decodes bytes (JSON views, patches, restores, checks of posted updates) runs in the engine's
document workers (``crdt.document_calls``), never in this process.

A restore cannot take the document back in time: it is one new change that makes the content equal to the
old version's. Just before it, the current document is saved as a version (named ``before restoring
version N``, so it is not pruned): restoring that one undoes the restore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from collab_server.crdt.document_calls import Action, DocumentAnswer, DocumentCall
from collab_server.crdt.engine import Applied, EngineError, Refusal
from collab_server.documents import DocumentLimits
from collab_server.errors import (
    Conflict,
    DocumentError,
    NotFound,
    PayloadTooLarge,
    StoreOverloaded,
    StoreUnavailable,
)
from collab_server.origins import LOCAL
from collab_server.room import Room
from collab_server.rooms import RoomManager
from collab_server.settings import Settings
from persistence.base import DocumentStore, UpdateWriter, Version

EMPTY_UPDATE = b"\x00\x00"


def document_limits(settings: Settings) -> DocumentLimits:
    """The bounds of the document logic, as configured."""
    return DocumentLimits(
        max_update_bytes=settings.document_max_bytes,
        max_structs=settings.document_max_structs,
        max_depth=settings.document_max_depth,
    )


@dataclass(frozen=True, slots=True)
class Read:
    """A document as read: ``update`` (binary) or ``view`` (JSON), and the state vector it reflects."""

    state_vector: bytes
    update: bytes | None = None
    view: DocumentAnswer | None = None


@dataclass(frozen=True, slots=True)
class Written:
    state_vector: bytes
    changed: bool


@dataclass(frozen=True, slots=True)
class Restored:
    version: int
    undo_version: int | None
    state_vector: bytes
    changed: bool


class RoomDocuments:
    """The document routes' operations on rooms, versions and the store."""

    def __init__(
        self, rooms: RoomManager, store: DocumentStore, writer: UpdateWriter, limits: DocumentLimits
    ) -> None:
        self.rooms = rooms
        self.store = store
        self.writer = writer
        self.limits = limits

    def __repr__(self) -> str:
        return f"RoomDocuments(limits={self.limits!r})"

    @asynccontextmanager
    async def _use(self, room: str) -> AsyncIterator[Room]:
        try:
            async with self.rooms.use(room) as loaded:
                yield loaded
        except TimeoutError as exc:
            raise StoreUnavailable(f"room {room!r} could not be loaded in time") from exc

    # -- the current document ------------------------------------------------------------------

    async def read(
        self, room: str, *, as_json: bool, types: Mapping[str, str], state_vector: bytes | None = None
    ) -> Read:
        engine = self.rooms.engine
        async with self._use(room):
            try:
                vector = await engine.state_vector(room)
                if state_vector is not None:
                    return Read(vector, update=await engine.diff(room, state_vector))
                full = await engine.full_state(room)
            except EngineError as exc:
                raise _engine_failed(exc) from exc
        if not as_json:
            return Read(vector, update=full)
        return Read(vector, view=await self._view(room, full, types))

    async def write_update(self, room: str, update: bytes) -> Written:
        """Apply a client's binary update; DocumentError (nothing changed) if it is not a usable one."""
        if len(update) > self.limits.max_update_bytes:
            raise PayloadTooLarge(f"updates are limited to {self.limits.max_update_bytes} bytes")
        # Checked in a document worker first: a bad update is refused with its reason, and never costs the
        # room's own worker a rebuild.
        await self._compute(room, DocumentCall(Action.CHECK, update, limits=self.limits), refused="update_refused")
        async with self._use(room) as loaded:
            return await self._apply(loaded, update)

    async def write_patch(self, room: str, patch: bytes) -> Written:
        """Apply a JSON patch of tldraw records (``{"put": [...], "delete": [...]}``)."""
        if len(patch) > self.limits.max_update_bytes:
            raise PayloadTooLarge(f"patches are limited to {self.limits.max_update_bytes} bytes")
        async with self._use(room) as loaded:
            full = await self._full_state(room)
            call = DocumentCall(Action.PATCH, full, patch, room=room, limits=self.limits)
            answer = await self._compute(room, call)
            return await self._apply(loaded, answer.update)

    # -- history -------------------------------------------------------------------------------

    async def versions(self, room: str) -> list[Version]:
        return await self.store.versions(room)

    async def save_version(self, room: str, label: str, created_by: str | None) -> Version:
        """The current document (everything committed, after a flush) as a named version."""
        await self.writer.flush()
        version = await self.store.compact(room, fold=self.rooms.fold, label=label, created_by=created_by)
        if version is None:
            raise Conflict("the room has no stored document yet: nothing to save")
        return version

    async def read_version(
        self, room: str, version: int, *, as_json: bool, types: Mapping[str, str], state_vector: bytes | None = None
    ) -> Read:
        stored = await self._stored_version(room, version)
        if state_vector is not None:
            call = DocumentCall(Action.DIFF, stored, state_vector, limits=self.limits)
            return Read(b"", update=(await self._compute(room, call)).update)
        if not as_json:
            return Read(b"", update=stored)
        return Read(b"", view=await self._view(room, stored, types))

    async def restore(self, room: str, version: int, created_by: str | None) -> Restored:
        old = await self._stored_version(room, version)
        async with self._use(room) as loaded:
            try:
                before = await self.save_version(room, f"before restoring version {version}", created_by)
            except Conflict:
                before = None  # nothing stored: the room was empty, and restoring nothing undoes this
            full = await self._full_state(room)
            call = DocumentCall(Action.RESTORE, full, old, room=room, limits=self.limits)
            answer = await self._compute(room, call)
            written = await self._apply(loaded, answer.update)
        return Restored(version, before.version if before else None, written.state_vector, written.changed)

    # -- plumbing ------------------------------------------------------------------------------

    async def _stored_version(self, room: str, version: int) -> bytes:
        stored = await self.store.read_version(room, version)
        if stored is None:
            raise NotFound(f"room {room!r} has no version {version}")
        return stored

    async def _full_state(self, room: str) -> bytes:
        try:
            return await self.rooms.engine.full_state(room)
        except EngineError as exc:
            raise _engine_failed(exc) from exc

    async def _view(self, room: str, document: bytes, types: Mapping[str, str]) -> DocumentAnswer:
        call = DocumentCall(Action.VIEW, document, types=dict(types), room=room, limits=self.limits)
        try:
            return await self._compute(room, call)
        except DocumentError as exc:
            if exc.code == "too_large":  # the stored document, not the request, is too large
                raise DocumentError("document_too_large", f"{exc.detail}; read it with format=update") from exc
            raise

    async def _compute(self, room: str, call: DocumentCall, refused: str = "unprocessable") -> DocumentAnswer:
        try:
            return await self.rooms.engine.compute(room, call)
        except EngineError as exc:
            if exc.refusal is Refusal.NOT_LOADED:
                raise StoreUnavailable("the document engine is not available right now") from exc
            raise DocumentError(refused, f"the document engine refused it: {exc.refusal.reason}") from exc

    async def _apply(self, room: Room, update: bytes) -> Written:
        if update == EMPTY_UPDATE:
            return Written(room.known_state_vector, False)
        if not self.writer.can_take(len(update)):
            raise StoreOverloaded("the store is not accepting writes right now")
        applied: Applied = await room.submit(update, LOCAL)
        if applied.refusal is Refusal.NOT_LOADED:
            raise StoreUnavailable("the room is being reloaded: try again")
        if applied.refusal is not None:
            raise DocumentError("update_refused", f"the update was refused: {applied.refusal.reason}")
        return Written(applied.state_vector, applied.new)


def _engine_failed(exc: EngineError) -> Exception:
    if exc.refusal is Refusal.BAD_STATE_VECTOR:
        return DocumentError("invalid_state_vector", "the state vector cannot be decoded")
    return StoreUnavailable(f"the room's document is not available right now ({exc.refusal.reason})")
