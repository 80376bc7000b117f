"""Liveness (presence.liveness): the promised bound, and what the survivors do when a replica dies."""

from __future__ import annotations

from pycrdt import Doc

from collab_server.protocol import AwarenessEntry, encode_awareness_message, encode_update
from collab_server.settings import Settings
from presence.liveness import detection_bound, heartbeat_ttl
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.cluster import Cluster, awareness_seen, holds, start, stored_text, text_of


async def test_a_dead_replicas_clients_disappear_and_its_unsaved_edits_are_stored(cluster: Cluster) -> None:
    hub, store, _ = cluster
    a = await start(cluster, "a", commit_window=30.0)  # a never commits before it dies
    b = await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, bob_socket, room_b = await b.join("r")
    await eventually(lambda: holds(a.replication.links["r"].replicas == {"b"}))
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, '{"user":"Alice"}')]))
    room_a.receive(alice, encode_update(append_text(Doc(), "only in memory")))
    await eventually(lambda: holds(awareness_seen(bob_socket) == {7: {"user": "Alice"}}))
    await eventually(lambda: holds(text_of(room_b) == "only in memory"))
    a.crash()
    cluster[2].remove(a)
    await eventually(lambda: holds(awareness_seen(bob_socket) == {}), timeout=5)
    await eventually(lambda: holds(store._rooms.get("r") is not None))
    assert await stored_text(store, "r") == "only in memory"
    assert hub.presence.get("r", {}) == {}


async def test_a_dead_replica_that_made_no_edit_here_costs_the_store_nothing(cluster: Cluster) -> None:
    _, store, _ = cluster
    a, b = await start(cluster, "a"), await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, bob_socket, _ = await b.join("r")
    await eventually(lambda: holds(a.replication.links["r"].replicas == {"b"}))
    room_a.receive(alice, encode_awareness_message([AwarenessEntry(7, 1, '{"user":"Alice"}')]))
    await eventually(lambda: holds(awareness_seen(bob_socket) == {7: {"user": "Alice"}}))
    a.crash()
    cluster[2].remove(a)
    await eventually(lambda: holds(awareness_seen(bob_socket) == {}), timeout=5)
    await b.writer.flush()
    assert await store.load("r") is None


def test_the_default_heartbeat_keeps_the_three_second_promise() -> None:
    interval = Settings().heartbeat_interval
    # One late or lost heartbeat is no death; a real one is found with time to spare for the removals
    # to reach the clients within the three intervals the README promises.
    assert heartbeat_ttl(interval) >= 2 * interval
    assert detection_bound(interval) < 3 * interval <= 3.0
