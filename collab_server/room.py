"""A room: the peers editing one document, their awareness, and the document's state vector.

The document itself lives in the CRDT engine (``collab_server.crdt``), in a worker process: this process
never runs the CRDT library on bytes a client sent. An update goes to the engine first; only once the
engine *accepted* it is it broadcast, stored and published. A refused one produced nothing anyone sees,
and closes its sender with 4400.

What is stored and published is the update *as the client sent it* (unless the engine says it carried
nothing new: a re-sent update is not stored twice). So the store holds exactly the sequence of bytes the
worker applied, and a worker rebuilt from the store after a crash replays the very same history: an
update that crashed it crashes the rebuilt one too, and is found (``collab_server.crdt.pool``). What is
broadcast is what the library's observer emitted (the part that was new, encoded by the library): peers
get nothing twice, and one tick's updates merge into one message.

Every change is applied with an *origin*: a local Peer, a remote Replica, or the server itself. Only
changes from a local peer or the server are handed to the sink (stored, published to other replicas);
changes from a replica are shown to local peers only, never stored or published again (the origin rule).

Broadcasts are batched per event-loop tick: the updates accepted in one engine answer are merged and sent
as one message per peer, encoded once. A peer never receives its own update back. Each peer's messages
are handled in order: its updates and its step1 go to the engine in the order they arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, Protocol

from pycrdt import merge_updates

from collab_server import metrics
from collab_server.awareness import AwarenessStates
from collab_server.broadcasts import Broadcasts
from collab_server.crdt.engine import Applied, DocumentEngine, EngineError, Refusal
from collab_server.errors import CloseCode, ProtocolError, StoreOverloaded
from collab_server.origins import Origin, Replica, is_local
from collab_server.outbox import Outbox
from collab_server.peer import Peer
from collab_server.protocol import (
    AuthMessage,
    AwarenessEntry,
    AwarenessMessage,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_awareness,
    decode_frame,
    decode_state_vector,
    encode_awareness_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from collab_server.transport import binary_frame

logger = logging.getLogger(__name__)

_EMPTY_UPDATE: Final = b"\x00\x00"
# Past this many updates in one tick the batch is broadcast at once, to bound merge cost and latency.
_MAX_BATCH: Final = 256
# Past this many bytes in one tick the updates are broadcast one by one instead of merged: a merge decodes
# them all in this process, and for a few large updates (a pasted board) it buys nothing.
_MAX_MERGE_BYTES: Final = 256 * 1024
# Broadcasts up to this size are framed once for all their peers (``Room._send_to_all``).
_FRAME_ONCE_BYTES: Final = 64 * 1024

# Label children bound once: .labels() per message would cost a dict lookup and a lock on the hot path.
_RECEIVED_UPDATE = metrics.MESSAGES_RECEIVED.labels("update")
_RECEIVED_STEP1 = metrics.MESSAGES_RECEIVED.labels("sync_step1")
_RECEIVED_AWARENESS = metrics.MESSAGES_RECEIVED.labels("awareness")
_RECEIVED_QUERY = metrics.MESSAGES_RECEIVED.labels("query_awareness")
_RECEIVED_AUTH = metrics.MESSAGES_RECEIVED.labels("auth")
# A sync answer this large (a board's whole document) is framed in a thread: copying 54 MiB on the event
# loop held every room for about 46 ms.
_ENCODE_IN_A_THREAD: Final = 1 << 20


class RoomSink(Protocol):
    """Where a room's local changes go besides its own peers: the store and the other replicas."""

    def accepts(self, nbytes: int) -> bool:
        """False when the store cannot take more writes right now."""
        ...

    def local_update(self, room: Room, update: bytes) -> None: ...

    def local_awareness(self, room: Room, message: bytes) -> None: ...

    def room_unavailable(self, room: Room) -> None:
        """The engine no longer holds the room's document: drop the room, so the next join reloads it."""
        ...


class Room:
    """One room's peers and awareness; its document is in ``engine``. Methods run on the event loop."""

    def __init__(
        self,
        name: str,
        engine: DocumentEngine,
        sink: RoomSink,
        *,
        known_state_vector: bytes = b"\x00",
        log_updates: int = 0,
        log_bytes: int = 0,
        broadcasts: Broadcasts | None = None,
    ):
        self.name = name
        self.engine = engine
        self.peers: set[Peer] = set()
        self.awareness = AwarenessStates()
        # As of the engine's last answer: what a joining peer's welcome step1 carries, without a round trip.
        self.known_state_vector = known_state_vector
        # The stored log since the last snapshot, as far as this replica knows: drives compaction.
        self.log_updates = log_updates
        self.log_bytes = log_bytes
        self.closed = False
        self._sink = sink
        self._pending: list[tuple[Origin, bytes]] = []
        # Where the room queues for its flush: shared by all rooms (``Rooms``), which bounds how long one
        # turn spends flushing them; a room of its own where none is given (tests).
        self._broadcasts = broadcasts if broadcasts is not None else Broadcasts()
        self._flush_queued = False
        self.rest_ends = 0.0  # kept by the broadcasts: a room whose broadcast took long waits before its next
        # Broadcasts being written, a slice of time per turn for a room of thousands (``outbox``); a flush due
        # meanwhile waits for them (``_flush_deferred``), its updates merging.
        self._outbox = Outbox(self._written)
        self._flush_deferred = False
        self._pending_awareness: dict[int, AwarenessEntry] = {}
        self._awareness_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"Room({self.name!r}, peers={len(self.peers)}, awareness={len(self.awareness)})"

    def _call_soon(self, callback: Callable[[], None]) -> asyncio.Handle:
        """``call_soon`` on the room's loop, found once: on Python 3.11 every ``get_running_loop()`` is a
        ``getpid()`` system call, and this runs for every awareness update."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.call_soon(callback)

    # -- peers ---------------------------------------------------------------------------------

    def add(self, peer: Peer) -> None:
        self.peers.add(peer)

    def welcome(self) -> list[bytes]:
        """What a joining peer is sent first: our sync step1, then everyone's awareness."""
        messages = [encode_sync_step1(self.known_state_vector)]
        entries = self.awareness.entries()
        if entries:
            messages.append(encode_awareness_message(entries))
        return messages

    def remove(self, peer: Peer) -> None:
        """Drop a peer and, for everyone left (here and on other replicas), the awareness it introduced."""
        if peer not in self.peers:
            return
        self.peers.discard(peer)
        removals = self.awareness.remove(peer.client_ids)
        peer.client_ids = ()
        if removals:
            self._relay_awareness(removals)
            self._sink.local_awareness(self, encode_awareness_message(removals))

    # -- incoming ------------------------------------------------------------------------------

    def receive(self, peer: Peer, frame: bytes) -> None:
        """Handle one frame from a local peer. ProtocolError: the frame is refused whole."""
        for message in decode_frame(frame):
            self.handle(peer, message)

    def handle(self, peer: Peer, message: Message) -> None:
        """Handle one decoded message from a local peer (the websocket endpoint decodes and bounds frames)."""
        if isinstance(message, SyncUpdate | SyncStep2):
            _RECEIVED_UPDATE.inc()
            if not peer.can_write:
                metrics.UPDATES_DROPPED.labels("read_only").inc()
                return
            if not self._sink.accepts(len(message.update)):
                metrics.UPDATES_DROPPED.labels("store_overloaded").inc()
                raise StoreOverloaded("the store is not accepting writes right now")
            self.apply(message.update, peer)
        elif isinstance(message, SyncStep1):
            _RECEIVED_STEP1.inc()
            decode_state_vector(message.state_vector)  # ProtocolError here, before the engine sees it
            self._spawn(self._answer_step1(peer, message.state_vector))
        elif isinstance(message, AwarenessMessage):
            _RECEIVED_AWARENESS.inc()
            self.apply_awareness(message.update, message.message, peer)
        elif isinstance(message, QueryAwareness):
            _RECEIVED_QUERY.inc()
            entries = self.awareness.entries()
            if entries:
                peer.send(encode_awareness_message(entries))
        elif isinstance(message, AuthMessage):
            # Clients never send auth messages; the server decides access at connect time.
            _RECEIVED_AUTH.inc()

    async def _answer_step1(self, peer: Peer, state_vector: bytes) -> None:
        try:
            diff = await self.engine.diff(self.name, state_vector)
        except EngineError as exc:
            self._refused(peer, exc.refusal)
            return
        if len(diff) < _ENCODE_IN_A_THREAD:
            peer.send(encode_sync_step2(diff))
        else:  # bytes.join lets go of the GIL for a large join: the copy does not hold the event loop
            peer.send(await asyncio.to_thread(encode_sync_step2, diff))

    def apply(self, update: bytes, origin: Origin) -> None:
        """Hand an update to the engine; once accepted it is broadcast (and stored, and published, when
        ``origin`` is local). A refused update from a peer closes that peer with 4400."""
        if update == _EMPTY_UPDATE:
            return
        self.engine.apply(self.name, update, lambda applied: self._applied(origin, update, applied), source=origin)

    async def submit(self, update: bytes, origin: Origin) -> Applied:
        """``apply``, and wait for the engine's verdict (REST writes, other replicas' updates)."""
        if update == _EMPTY_UPDATE:
            return Applied(None, b"", self.known_state_vector)
        future: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()

        def done(applied: Applied) -> None:
            self._applied(origin, update, applied)
            if not future.done():
                future.set_result(applied)

        self.engine.apply(self.name, update, done, source=origin)
        return await future

    def _applied(self, origin: Origin, sent: bytes, applied: Applied) -> None:
        if applied.refusal is not None:
            self._refused(origin, applied.refusal)
            return
        if self.closed:
            return
        self.known_state_vector = applied.state_vector
        if applied.new and is_local(origin):
            self.log_updates += 1
            self.log_bytes += len(sent)
            self._sink.local_update(self, sent)
        update = applied.update
        if not update or update == _EMPTY_UPDATE:
            return  # nothing to show: a duplicate, or waiting for an update it depends on
        self._pending.append((origin, update))
        if len(self._pending) >= _MAX_BATCH:
            self.flush()
        elif not self._flush_queued:
            self._flush_queued = True
            self._broadcasts.add(self)

    def _refused(self, origin: Origin, refusal: Refusal) -> None:
        metrics.UPDATES_REFUSED.labels(refusal.label).inc()
        if isinstance(origin, Peer):
            if refusal is Refusal.NOT_LOADED:
                origin.close(CloseCode.TRY_AGAIN_LATER, "room is being reloaded: reconnect")
                self._sink.room_unavailable(self)
                return
            metrics.PEERS_CLOSED.labels("update_refused").inc()
            if not origin.closed:
                logger.info(
                    "peer %d in room %r: %s (%s)",
                    origin.id,
                    self.name,
                    refusal.reason,
                    refusal.label,
                    extra={"room": self.name, "peer": origin.id},
                )
            origin.close(CloseCode.PROTOCOL_ERROR, f"protocol error: {refusal.reason}")
        else:
            logger.warning("room %r: an update from %r was refused: %s", self.name, origin, refusal.reason)

    def apply_awareness(self, update: bytes, message: bytes, origin: Origin) -> None:
        """Apply an awareness update and relay what it changed to every local peer, sender included
        (the y-websocket client reconnects after 30 s without hearing anything)."""
        accepted = self.awareness.apply(decode_awareness(update))
        if isinstance(origin, Peer):
            for entry in accepted:
                if entry.removed:
                    origin.removed(entry.client_id)
                else:
                    origin.introduced(entry.client_id)
        self._relay_awareness(accepted)
        if isinstance(origin, Peer):
            self._sink.local_awareness(self, message)

    def _relay_awareness(self, entries: list[AwarenessEntry]) -> None:
        """Queue awareness changes for every local peer: those of one event-loop tick go out as one
        message per peer (newest entry per client). Every joining provider announces itself to all the
        others, so a room whose peers arrive together would otherwise cost peers² sends."""
        for entry in entries:
            self._pending_awareness[entry.client_id] = entry
        if self._pending_awareness and self._awareness_handle is None:
            self._awareness_handle = self._call_soon(self._flush_awareness)

    def _flush_awareness(self) -> None:
        self._awareness_handle = None
        if self._outbox.writing:
            # The entries wait, newest per client, for the broadcast being written (``_written``): queued
            # behind it one relay per turn, a room of thousands would pile up broadcasts faster than they
            # are written.
            return
        pending, self._pending_awareness = self._pending_awareness, {}
        if pending:
            self._send_to_all(encode_awareness_message(list(pending.values())))

    # -- what other replicas see (collab_server.replication.SharedRoom) ---------------------------

    async def apply_remote(self, update: bytes, origin: Replica) -> None:
        await self.submit(update, origin)

    def apply_remote_awareness(self, update: bytes, message: bytes, origin: Replica) -> None:
        self.apply_awareness(update, message, origin)

    def awareness_entries(self) -> list[AwarenessEntry]:
        return self.awareness.entries()

    def has_local_client(self, client_id: int) -> bool:
        return any(client_id in peer.client_ids for peer in self.peers)

    async def state_vector(self) -> bytes:
        """The state vector once every update handed to the engine so far is in."""
        return await self.engine.state_vector(self.name)

    async def diff(self, state_vector: bytes) -> bytes:
        try:
            return await self.engine.diff(self.name, state_vector)
        except EngineError as exc:
            raise ProtocolError(exc.refusal.reason) from exc

    async def delete_set(self) -> bytes:
        return await self.engine.delete_set(self.name)

    # -- broadcast -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Broadcast the updates accepted since the last flush: merged, encoded once. Called by the
        room's turn in ``broadcasts``, or at once by a full batch or the room's closing (the queued turn then
        finds nothing, or the updates that came since). While the last broadcast is still being written,
        the flush waits for it (``_written``)."""
        if self._outbox.writing:
            self._flush_deferred = True  # still queued: ``_applied`` does not queue the room again
            return
        self._flush_queued = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        metrics.BROADCASTS.inc()
        if len(pending) == 1 or sum(len(update) for _, update in pending) > _MAX_MERGE_BYTES:
            # One update, or large ones: each is sent as it is (merging large updates costs this process
            # more than the extra messages do).
            for origin, update in pending:
                self._send_to_all(encode_update(update), skip=origin)
            return
        # Merging updates the engine emitted (never a client's bytes) is safe here.
        everything = encode_update(merge_updates(*(update for _, update in pending)))
        senders = {origin for origin, _ in pending if isinstance(origin, Peer)}
        self._send_to_all(everything, skip_all=senders)
        # A peer that sent part of this batch gets the rest only: never its own update back.
        for sender in senders:
            if sender in self.peers:
                others = [update for origin, update in pending if origin is not sender]
                if others:
                    sender.send(encode_update(merge_updates(*others)))

    def _send_to_all(self, message: bytes, *, skip: object = None, skip_all: Iterable[Peer] = ()) -> None:
        skipped = set(skip_all)
        # Framed once for all the peers: each write is then one buffer as it is, where framing per peer cost
        # a header and a two-buffer write each (0.7 of 3.3 us a peer: docs/benchmarks.md, session 20). A
        # large message is not copied into a frame: each peer writes its header and the payload apart.
        frame = binary_frame(message) if len(message) <= _FRAME_ONCE_BYTES else None
        # A copy of the peers: a slow peer closed by send() leaves self.peers.
        peers = tuple(peer for peer in self.peers if peer is not skip and peer not in skipped)
        metrics.MESSAGES_SENT.inc(len(peers))
        self._outbox.send(message, frame, peers)

    def _written(self, seconds: float) -> None:
        """Everything broadcast so far is written, in ``seconds`` (across turns): rest if that was long, and
        then flush what waited for it."""
        self._broadcasts.rest(self, seconds)
        if self._flush_deferred:
            self._flush_deferred = False
            self._broadcasts.add(self)
        if self._pending_awareness and self._awareness_handle is None:
            self._awareness_handle = self._call_soon(self._flush_awareness)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Broadcast what is pending and stop (the room is being unloaded)."""
        self._outbox.write_all()
        self.flush()
        self._outbox.write_all()
        if self._awareness_handle is not None:
            self._awareness_handle.cancel()
        self._flush_awareness()
        self._outbox.write_all()
        self.closed = True
        for task in self._tasks:
            task.cancel()
