"""Several replicas in one process for the presence tests: RoomManager + BrokerReplication per replica, on
one LocalHub (the in-process stand-in for Redis) and one MemoryStore. The ``cluster`` fixture is in
tests/unit/conftest.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Text

from collab_server.peer import Peer
from collab_server.protocol import AwarenessMessage, SyncStep2, SyncUpdate, decode_awareness, encode_update
from collab_server.room import Room
from collab_server.rooms import RoomManager
from collab_server.secrets import SecretURL
from collab_server.settings import Settings
from persistence.memory import MemoryStore
from persistence.merge import build_doc
from persistence.writer import AppendWriter
from presence.broker_replication import BrokerReplication
from presence.local import LocalBroker, LocalHub, LocalRegistry
from tests.support.documents import append_text
from tests.unit.fakes import RecordingSocket, doc_of

Cluster = tuple[LocalHub, MemoryStore, list["Node"]]

HEARTBEAT = 0.1


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
        self.registry = LocalRegistry(hub, ttl=60)
        self.replication = BrokerReplication(
            self.broker, self.registry, heartbeat_interval=HEARTBEAT, anti_entropy_interval=0.1, writer=self.writer
        )
        self.rooms = RoomManager(store, self.writer, self.settings, self.replication)

    async def start(self) -> Node:
        self.writer.start()
        await self.replication.start()
        return self

    async def join(self, room: str) -> tuple[Peer, RecordingSocket, Room]:
        socket = RecordingSocket()
        peer = Peer(socket, room_name=room)
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
        for task in [*self.replication._tasks, *self.replication.outbox._tasks]:
            task.cancel()
        assert self.writer._task is not None
        self.writer._task.cancel()


async def start(cluster: Cluster, name: str, **kwargs: Any) -> Node:
    hub, store, nodes = cluster
    node = await Node(hub, store, name, **kwargs).start()
    nodes.append(node)
    return node


@dataclass
class Shared:
    """Room "r" on replicas a and b: a writing peer on a, a reading one (its socket) on b."""

    a: Node
    b: Node
    writer: Peer
    room_a: Room
    reader: RecordingSocket
    room_b: Room
    client: Doc[Any] = field(default_factory=Doc)

    def edit(self, text: str) -> None:
        """The writer on a appends ``text`` to the Y.Text "t", as a client's update."""
        self.room_a.receive(self.writer, encode_update(append_text(self.client, text)))


async def shared_room(cluster: Cluster) -> Shared:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    _, reader, room_b = await b.join("r")
    return Shared(a, b, writer, room_a, reader, room_b)


def holds(condition: bool) -> None:
    """For ``eventually(lambda: holds(...))``."""
    assert condition


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


def hub_channels(hub: LocalHub, replica: str) -> set[str]:
    return {room for room, members in hub.channels.items() if any(b.replica_id == replica for b, _ in members)}
