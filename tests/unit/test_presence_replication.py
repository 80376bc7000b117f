"""BrokerReplication with several in-process replicas on one LocalHub: fan-out, the origin rule, catch-up on
load, repairs after lost envelopes, awareness across replicas and the death of a replica."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab_server.origins import Replica
from collab_server.peer import Peer
from collab_server.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    SyncStep2,
    SyncUpdate,
    decode_awareness,
    encode_awareness_message,
    encode_sync_step1,
    encode_update,
)
from collab_server.room import Room
from collab_server.rooms import RoomManager
from collab_server.secrets import SecretURL
from collab_server.settings import Settings
from persistence.memory import MemoryStore
from persistence.merge import build_doc
from persistence.writer import AppendWriter
from presence.broker import Envelope, Kind
from presence.local import LocalBroker, LocalHub, LocalRegistry
from presence.replication import BULK_THRESHOLD, BrokerReplication
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.fakes import RecordingSocket, doc_of


class Node:
    """One replica: RoomManager + BrokerReplication on a shared hub and store."""

    def __init__(
        self,
        hub: LocalHub,
        store: MemoryStore,
        name: str,
        *,
        commit_window: float = 0.001,
        broker: LocalBroker | None = None,
    ) -> None:
        self.name = name
        self.settings = Settings(replica_id=name, room_grace=0.05, database_url=SecretURL("memory://"))
        self.writer = AppendWriter(store, window=commit_window)
        self.broker = broker or LocalBroker(hub, name)
        self.registry = LocalRegistry(hub, ttl=60, heartbeat_ttl=0.3)
        self.replication = BrokerReplication(
            self.broker, self.registry, heartbeat_interval=0.1, anti_entropy_interval=0.1, store=store
        )
        self.rooms = RoomManager(store, self.writer, self.settings, self.replication)

    async def start(self) -> Node:
        self.writer.start()
        await self.replication.start()
        return self

    async def join(self, room: str) -> tuple[Peer, RecordingSocket, Room]:
        socket = RecordingSocket()
        peer = Peer(socket.send, room_name=room, abort=socket.abort)
        joined = await self.rooms.join(room, peer)
        for message in joined.welcome():
            peer.send(message)
        return peer, socket, joined

    async def close(self) -> None:
        await self.rooms.close()
        await self.replication.close()
        await self.writer.close()

    def crash(self) -> None:
        """Vanish as a SIGKILLed process does: no goodbye, no heartbeats, no envelopes, no commits.
        (Private attributes on purpose: nothing public should be able to do this.)"""
        self.broker.disconnect()
        for task in self.replication._tasks:
            task.cancel()
        assert self.writer._task is not None
        self.writer._task.cancel()


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[LocalHub, MemoryStore, list[Node]]]:
    hub, store, nodes = LocalHub(), MemoryStore(), list[Node]()
    yield hub, store, nodes
    for node in nodes:
        await node.close()


async def start(cluster: tuple[LocalHub, MemoryStore, list[Node]], name: str, **kwargs: Any) -> Node:
    hub, store, nodes = cluster
    node = await Node(hub, store, name, **kwargs).start()
    nodes.append(node)
    return node


def text_of(room: Room, name: str = "t") -> str:
    return str(doc_of(room).get(name, type=Text))


def received_text(socket: RecordingSocket) -> str:
    doc: Doc[Any] = Doc()
    for message in socket.messages():
        if isinstance(message, SyncUpdate | SyncStep2):
            doc.apply_update(message.update)
    return str(doc.get("t", type=Text))


def awareness_seen(socket: RecordingSocket) -> dict[int, Any]:
    """Client id → state as a y-protocols client would hold it after the messages received so far."""
    clocks: dict[int, int] = {}
    states: dict[int, Any] = {}
    for message in socket.messages():
        if isinstance(message, AwarenessMessage):
            for entry in decode_awareness(message.update):
                if entry.clock > clocks.get(entry.client_id, 0) or (
                    entry.clock == clocks.get(entry.client_id, 0) and entry.removed
                ):
                    clocks[entry.client_id] = entry.clock
                    if entry.removed:
                        states.pop(entry.client_id, None)
                    else:
                        states[entry.client_id] = json.loads(entry.state)
    return states


async def stored_text(store: MemoryStore, room: str) -> str:
    stored = await store.load(room)
    assert stored is not None
    return str(build_doc(room, stored.snapshot, stored.updates).get("t", type=Text))


async def test_an_edit_on_one_replica_reaches_peers_on_the_other_and_is_stored_once(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    _, reader_socket, room_b = await b.join("r")
    client: Doc[Any] = Doc()
    room_a.receive(writer, encode_update(append_text(client, "hello")))

    def arrived() -> None:
        assert received_text(reader_socket) == "hello"
        assert text_of(room_b) == "hello"

    await eventually(arrived)
    await a.writer.flush()
    await b.writer.flush()
    stored = await cluster[1].load("r")
    # Stored by the replica whose peer made it, never again by the replica that got it from the broker.
    assert stored is not None and len(stored.updates) == 1


async def test_updates_from_a_replica_are_not_published_again(cluster: Any) -> None:
    hub, _, _ = cluster
    a, b = await start(cluster, "a"), await start(cluster, "b")
    spy = LocalBroker(hub, "spy")
    async with spy.subscribe("r") as heard:
        writer, _, room_a = await a.join("r")
        _, _, room_b = await b.join("r")
        await eventually(lambda: _assert(a.replication._links["r"].replicas >= {"b"}))
        client: Doc[Any] = Doc()
        room_a.receive(writer, encode_update(append_text(client, "x")))
        await eventually(lambda: _assert(text_of(room_b) == "x"))
        await a.replication._drained()
        await b.replication._drained()
        updates = [e for e in await heard.next_batch() if isinstance(e, Envelope) and e.kind is Kind.UPDATE]
        assert [e.replica for e in updates] == ["a"]


def _assert(condition: bool) -> None:
    assert condition


async def test_a_replica_loading_late_gets_what_is_not_stored_yet(cluster: Any) -> None:
    # a's group commit window is long: its edit is in memory only when b loads the room.
    a = await start(cluster, "a", commit_window=30.0)
    b = await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    client: Doc[Any] = Doc()
    room_a.receive(writer, encode_update(append_text(client, "unsaved")))
    assert await cluster[1].load("r") is None
    reader, socket, room_b = await b.join("r")
    room_b.receive(reader, encode_sync_step1(b"\x00"))  # what a y-websocket client sends on connect
    await eventually(lambda: _assert(text_of(room_b) == "unsaved" and received_text(socket) == "unsaved"))
    a.crash()  # rather than wait out its commit window at teardown
    cluster[2].remove(a)


async def test_edits_made_before_replicas_know_each_other_still_cross(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    writer_a, _, room_a = await a.join("r")
    writer_b, _, room_b = await b.join("r")
    # Both edit at once, before either has heard the other: neither publishes yet.
    room_a.receive(writer_a, encode_update(append_text(Doc(), "A")))
    room_b.receive(writer_b, encode_update(append_text(Doc(), "B")))

    def converged() -> None:
        assert sorted(text_of(room_a)) == ["A", "B"]
        assert text_of(room_a) == text_of(room_b)

    await eventually(converged)


async def test_a_lost_connection_is_repaired_after_reconnect(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    _, reader_socket, room_b = await b.join("r")
    client: Doc[Any] = Doc()
    room_a.receive(writer, encode_update(append_text(client, "1")))
    await eventually(lambda: _assert(text_of(room_b) == "1"))
    b.broker.disconnect()
    room_a.receive(writer, encode_update(append_text(client, "2")))
    room_a.receive(writer, encode_update(append_text(client, "3")))
    await a.replication._drained()
    assert text_of(room_b) == "1"  # lost on the way
    b.broker.reconnect()
    await eventually(lambda: _assert(text_of(room_b) == "123" and received_text(reader_socket) == "123"))


async def test_failed_publishes_are_repaired_once_publishing_works(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    _, _, room_b = await b.join("r")
    client: Doc[Any] = Doc()
    room_a.receive(writer, encode_update(append_text(client, "1")))
    await eventually(lambda: _assert(text_of(room_b) == "1"))
    a.broker._connected = False  # publishes fail; nothing tells b (no Gap on its side)
    room_a.receive(writer, encode_update(append_text(client, "2")))
    await eventually(lambda: _assert("r" in a.replication._dirty))
    a.broker._connected = True
    room_a.receive(writer, encode_update(append_text(client, "3")))
    await eventually(lambda: _assert(text_of(room_b) == "123"))


async def test_silent_divergence_is_found_by_the_digest(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    _, _, room_a = await a.join("r")
    _, _, room_b = await b.join("r")
    await eventually(lambda: _assert(a.replication._links["r"].replicas == {"b"}))
    await eventually(lambda: _assert(b.replication._links["r"].replicas == {"a"}))
    # An update that reached b without an envelope (as if pub/sub dropped it without any Gap).
    client: Doc[Any] = Doc()
    room_b.apply(append_text(client, "quiet"), Replica("ghost"))
    b.replication._links["r"].changed = True
    await eventually(lambda: _assert(text_of(room_a) == "quiet"))


async def test_a_deletion_alone_is_found_by_the_digest(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    _, _, room_b = await b.join("r")
    client: Doc[Any] = Doc()
    room_a.receive(writer, encode_update(append_text(client, "abcdef")))
    await eventually(lambda: _assert(text_of(room_b) == "abcdef"))
    # A delete-only update advances no clock: equal state vectors, different delete sets.
    before = client.get_state()
    del client.get("t", type=Text)[1:3]
    room_b.apply(client.get_update(before), Replica("ghost"))
    assert doc_of(room_a).get_state() == doc_of(room_b).get_state()
    b.replication._links["r"].changed = True
    await eventually(lambda: _assert(text_of(room_a) == "adef"))


async def test_awareness_crosses_replicas_and_is_removed_when_the_peer_leaves(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, bob_socket, room_b = await b.join("r")
    await eventually(lambda: _assert(a.replication._links["r"].replicas == {"b"}))
    state = {"user": {"name": "Alice", "color": "#f00"}, "cursor": 3}
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, json.dumps(state))]))
    await eventually(lambda: _assert(awareness_seen(bob_socket) == {7: state}))

    async def listed() -> None:
        entries = await b.registry.list("r")
        assert [(e.client_id, e.user, e.color, e.replica) for e in entries] == [(7, "Alice", "#f00", "a")]

    await eventually(listed)
    a.rooms.leave(room_a, alice)
    await eventually(lambda: _assert(awareness_seen(bob_socket) == {} and len(room_b.awareness) == 0))

    async def unlisted() -> None:
        assert await b.registry.list("r") == []

    await eventually(unlisted)


async def test_a_late_replica_is_told_who_is_there(cluster: Any) -> None:
    a = await start(cluster, "a")
    alice, _, room_a = await a.join("r")
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, '{"user":"Alice"}')]))
    b = await start(cluster, "b")
    _, bob_socket, _ = await b.join("r")
    await eventually(lambda: _assert(awareness_seen(bob_socket) == {7: {"user": "Alice"}}))


async def test_a_dead_replicas_clients_disappear_and_its_unsaved_edits_are_stored(cluster: Any) -> None:
    hub, store, _ = cluster
    a = await start(cluster, "a", commit_window=30.0)  # a never commits before it dies
    b = await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, bob_socket, room_b = await b.join("r")
    await eventually(lambda: _assert(a.replication._links["r"].replicas == {"b"}))
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, '{"user":"Alice"}')]))
    room_a.receive(alice, encode_update(append_text(Doc(), "only in memory")))
    await eventually(lambda: _assert(awareness_seen(bob_socket) == {7: {"user": "Alice"}}))
    await eventually(lambda: _assert(text_of(room_b) == "only in memory"))
    a.crash()
    cluster[2].remove(a)
    await eventually(lambda: _assert(awareness_seen(bob_socket) == {}), timeout=5)
    await eventually(lambda: _assert(store._rooms.get("r") is not None))
    assert await stored_text(store, "r") == "only in memory"
    assert hub.presence.get("r", {}) == {}


async def test_a_broken_envelope_costs_only_itself(cluster: Any) -> None:
    hub, _, _ = cluster
    b = await start(cluster, "b")
    _, _, room = await b.join("r")
    _, _, other_room = await b.join("other")
    evil = LocalBroker(hub, "evil")
    client: Doc[Any] = Doc()
    await evil.publish_many(
        [
            ("r", Envelope("evil", Kind.UPDATE, b"\xff\xff\xff not an update")),
            ("r", Envelope("evil", Kind.SYNC_STEP1, b"\x05")),
            ("r", Envelope("evil", Kind.AWARENESS, b"\x01\x09garbage")),
            ("r", Envelope("evil", Kind.UPDATE, append_text(client, "fine"))),
            ("other", Envelope("evil", Kind.UPDATE, append_text(Doc(), "also fine"))),
        ]
    )
    await eventually(lambda: _assert(text_of(room) == "fine" and text_of(other_room) == "also fine"))


async def test_a_replica_that_unloads_the_room_says_so(cluster: Any) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, _, _ = await b.join("r")
    await eventually(lambda: _assert(b.replication._links["r"].replicas == {"a"}))
    a.rooms.leave(room_a, alice)
    await eventually(lambda: _assert(b.replication._links["r"].replicas == set()))
    assert "r" not in hub_channels(cluster[0], "a")


def hub_channels(hub: LocalHub, replica: str) -> set[str]:
    return {room for room, members in hub.channels.items() if any(b.replica_id == replica for b, _ in members)}


class GatedBroker(LocalBroker):
    """A LocalBroker whose publishes of large payloads wait for ``gate``: a stand-in for a slow Redis
    write of a huge message (which we cannot make slow on purpose with a real one)."""

    gate: asyncio.Event

    async def publish_many(self, batch: Sequence[tuple[str, Envelope]]) -> None:
        if any(len(envelope.payload) > BULK_THRESHOLD for _, envelope in batch):
            await self.gate.wait()
        await super().publish_many(batch)


async def test_a_huge_update_in_one_room_does_not_hold_back_another_rooms(cluster: Any) -> None:
    gated = GatedBroker(cluster[0], "a")
    gated.gate = asyncio.Event()
    a = await start(cluster, "a", broker=gated)
    b = await start(cluster, "b")
    writer_a, _, big_a = await a.join("big")
    small_writer, _, small_a = await a.join("small")
    _, _, big_b = await b.join("big")
    _, _, small_b = await b.join("small")
    await eventually(lambda: _assert(a.replication._links["small"].replicas == {"b"}))
    await eventually(lambda: _assert(a.replication._links["big"].replicas == {"b"}))
    big_a.receive(writer_a, encode_update(append_text(Doc(), "x" * (2 * BULK_THRESHOLD))))
    small_a.receive(small_writer, encode_update(append_text(Doc(), "quick")))
    await eventually(lambda: _assert(text_of(small_b) == "quick"))
    assert text_of(big_b) == ""  # still on its way
    gated.gate.set()
    await eventually(lambda: _assert(len(text_of(big_b)) == 2 * BULK_THRESHOLD))


async def test_a_room_loading_on_a_second_replica_waits_for_edits_the_first_has_not_stored(
    cluster: tuple[LocalHub, MemoryStore, list[Node]],
) -> None:
    _hub, store, _nodes = cluster
    # A's group commit waits 3 s, so while B loads, A's edit lives only in A's memory.
    a = await start(cluster, "a", commit_window=3)
    b = await start(cluster, "b")
    peer, _, room_a = await a.join("r")
    room_a.receive(peer, encode_awareness_message([AwarenessEntry(7, 1, json.dumps({"user": "ann"}))]))
    room_a.receive(peer, encode_update(append_text(Doc(client_id=7), "unstored on a")))

    async def a_is_present() -> None:
        assert {entry.replica for entry in await b.registry.list("r")} == {"a"}

    await eventually(a_is_present)  # A's periodic presence write
    assert await store.load("r") is None
    # The very first client on B is answered from a document that already holds A's edit.
    _, _, room_b = await b.join("r")
    assert text_of(room_b) == "unstored on a"
