"""A room: one document in memory, the peers editing it, and their awareness.

Every change is applied with an *origin*: a local Peer, a remote Replica, or the server itself. Only
changes from a local peer are handed to the sink (stored, published to other replicas); changes from a
replica are shown to local peers only, never stored or published again (the origin rule).

Broadcasts are batched per event-loop tick: the updates applied while one tick processes incoming frames
are merged and sent as one message per peer, encoded once. A peer never receives its own update back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Final, Protocol

from pycrdt import Doc, Transaction, TransactionEvent, merge_updates

from collab_server import metrics
from collab_server.awareness import AwarenessStates
from collab_server.errors import ProtocolError, StoreOverloaded
from collab_server.origins import LOCAL, Origin, Replica, is_local
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
    encode_awareness_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)

logger = logging.getLogger(__name__)

_EMPTY_UPDATE: Final = b"\x00\x00"
# Past this many updates in one tick the batch is broadcast at once, to bound merge cost and latency.
_MAX_BATCH: Final = 256

# Label children bound once: .labels() per message would cost a dict lookup and a lock on the hot path.
_RECEIVED_UPDATE = metrics.MESSAGES_RECEIVED.labels("update")
_RECEIVED_STEP1 = metrics.MESSAGES_RECEIVED.labels("sync_step1")
_RECEIVED_AWARENESS = metrics.MESSAGES_RECEIVED.labels("awareness")
_RECEIVED_QUERY = metrics.MESSAGES_RECEIVED.labels("query_awareness")
_RECEIVED_AUTH = metrics.MESSAGES_RECEIVED.labels("auth")




class RoomSink(Protocol):
    """Where a room's local changes go besides its own peers: the store and the other replicas."""

    def accepts(self, nbytes: int) -> bool:
        """False when the store cannot take more writes right now."""
        ...

    def local_update(self, room: Room, update: bytes) -> None: ...

    def local_awareness(self, room: Room, message: bytes) -> None: ...


class Room:
    """One document and its peers. All methods run on the event loop and never await."""

    def __init__(self, name: str, doc: Doc[Any], sink: RoomSink, *, log_updates: int = 0, log_bytes: int = 0):
        self.name = name
        self.doc = doc
        self.peers: set[Peer] = set()
        self.awareness = AwarenessStates()
        # The stored log since the last snapshot, as far as this replica knows: drives compaction.
        self.log_updates = log_updates
        self.log_bytes = log_bytes
        self._sink = sink
        self._pending: list[tuple[Origin, bytes]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._subscription = doc.observe(self._on_transaction)

    def __repr__(self) -> str:
        return f"Room({self.name!r}, peers={len(self.peers)}, awareness={len(self.awareness)})"

    # -- peers ---------------------------------------------------------------------------------

    def add(self, peer: Peer) -> None:
        self.peers.add(peer)

    def welcome(self) -> list[bytes]:
        """What a joining peer is sent first: our sync step1, then everyone's awareness."""
        messages = [encode_sync_step1(self.doc.get_state())]
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
        peer.client_ids.clear()
        if removals:
            message = encode_awareness_message(removals)
            self._send_to_all(message)
            self._sink.local_awareness(self, message)

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
            try:
                diff = self.doc.get_update(message.state_vector)
            except ValueError as exc:
                raise ProtocolError("sync step1 carries an invalid state vector") from exc
            peer.send(encode_sync_step2(diff))
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

    def apply(self, update: bytes, origin: Origin) -> None:
        """Apply an update to the document; ProtocolError if it cannot be decoded."""
        if update == _EMPTY_UPDATE:
            return
        try:
            # The transaction carries the origin to _on_transaction, which decides where the change goes.
            with self.doc.transaction(origin=origin):
                self.doc.apply_update(update)
        except ValueError as exc:
            raise ProtocolError("update cannot be decoded") from exc

    def apply_awareness(self, update: bytes, message: bytes, origin: Origin) -> None:
        """Apply an awareness update and relay it as received to every local peer, sender included
        (the y-websocket client reconnects after 30 s without hearing anything)."""
        accepted = self.awareness.apply(decode_awareness(update))
        if isinstance(origin, Peer):
            for entry in accepted:
                if entry.removed:
                    origin.client_ids.discard(entry.client_id)
                else:
                    origin.client_ids.add(entry.client_id)
        self._send_to_all(message)
        if isinstance(origin, Peer):
            self._sink.local_awareness(self, message)

    # -- what other replicas see (collab_server.replication.SharedRoom) ---------------------------

    async def apply_remote(self, update: bytes, origin: Replica) -> None:
        self.apply(update, origin)

    def apply_remote_awareness(self, update: bytes, message: bytes, origin: Replica) -> None:
        self.apply_awareness(update, message, origin)

    def awareness_entries(self) -> list[AwarenessEntry]:
        return self.awareness.entries()

    def has_local_client(self, client_id: int) -> bool:
        return any(client_id in peer.client_ids for peer in self.peers)

    async def state_vector(self) -> bytes:
        return self.doc.get_state()

    async def diff(self, state_vector: bytes) -> bytes:
        return self.doc.get_update(state_vector)

    async def delete_set(self) -> bytes:
        return self.doc.get_update(self.doc.get_state())

    # -- broadcast -----------------------------------------------------------------------------

    def _on_transaction(self, event: TransactionEvent) -> None:
        # Runs inside the transaction commit of apply_update: queue only, never touch the doc.
        update: bytes = event.update
        if update == _EMPTY_UPDATE:
            return
        # The origin apply() gave the transaction (pycrdt's stubs lack TransactionEvent.transaction).
        origin: Origin = Transaction(self.doc, event.transaction).origin  # type: ignore[attr-defined]
        if origin is None:
            origin = LOCAL  # a change made on the doc directly, by the server itself
        self._pending.append((origin, update))
        if is_local(origin):
            self.log_updates += 1
            self.log_bytes += len(update)
            self._sink.local_update(self, update)
        if len(self._pending) >= _MAX_BATCH:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Broadcast the updates applied since the last flush: merged, encoded once."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        metrics.BROADCASTS.inc()
        if len(pending) == 1:
            origin, update = pending[0]
            self._send_to_all(encode_update(update), skip=origin)
            return
        everything = encode_update(merge_updates(*(update for _, update in pending)))
        senders = {origin for origin, _ in pending if isinstance(origin, Peer)}
        self._send_to_all(everything, skip_all=senders)
        # A peer that sent part of this batch gets the rest only: never its own update back.
        for sender in senders:
            if sender in self.peers:
                others = [update for origin, update in pending if origin is not sender]
                if others:
                    sender.send(encode_update(merge_updates(*others)))

    def _send_to_all(
        self, message: bytes, *, skip: object = None, skip_all: Iterable[Peer] = ()
    ) -> None:
        skipped = set(skip_all)
        count = 0
        # A slow peer closed by send() leaves self.peers; iterate over a copy.
        for peer in tuple(self.peers):
            if peer is skip or peer in skipped:
                continue
            peer.send(message)
            count += 1
        metrics.MESSAGES_SENT.inc(count)

    def close(self) -> None:
        """Stop observing the document (the room is being unloaded)."""
        self.flush()
        self.doc.unobserve(self._subscription)
