"""Awareness across replicas (presence.awareness_relay): relayed, listed in the registry, removed."""

from __future__ import annotations

import json

from collab_server.protocol import AwarenessEntry, encode_awareness_message
from tests.support.eventually import eventually
from tests.unit.cluster import Cluster, awareness_seen, holds, start


async def test_awareness_crosses_replicas_and_is_removed_when_the_peer_leaves(cluster: Cluster) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, bob_socket, room_b = await b.join("r")
    await eventually(lambda: holds(a.replication.links["r"].replicas == {"b"}))
    state = {"user": {"name": "Alice", "color": "#f00"}, "cursor": 3}
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, json.dumps(state))]))
    await eventually(lambda: holds(awareness_seen(bob_socket) == {7: state}))

    async def listed() -> None:
        entries = await b.registry.list("r")
        assert [(e.client_id, e.user, e.color, e.replica) for e in entries] == [(7, "Alice", "#f00", "a")]

    await eventually(listed)
    a.rooms.leave(room_a, alice)
    await eventually(lambda: holds(awareness_seen(bob_socket) == {} and len(room_b.awareness) == 0))

    async def unlisted() -> None:
        assert await b.registry.list("r") == []

    await eventually(unlisted)


async def test_a_late_replica_is_told_who_is_there(cluster: Cluster) -> None:
    a = await start(cluster, "a")
    alice, _, room_a = await a.join("r")
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, '{"user":"Alice"}')]))
    b = await start(cluster, "b")
    _, bob_socket, _ = await b.join("r")
    await eventually(lambda: holds(awareness_seen(bob_socket) == {7: {"user": "Alice"}}))
