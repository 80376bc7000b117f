"""The state-vector exchange (presence.repair): catch-up on load, discovery, repairs after lost envelopes,
and the digests of anti-entropy."""

from __future__ import annotations

import json
from typing import Any

from pycrdt import Doc, Text

from collab_server.origins import Replica
from collab_server.protocol import AwarenessEntry, encode_awareness_message, encode_sync_step1, encode_update
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.cluster import Cluster, holds, received_text, shared_room, start, text_of
from tests.unit.fakes import doc_of


async def test_a_replica_loading_late_gets_what_is_not_stored_yet(cluster: Cluster) -> None:
    # a's group commit window is long: its edit is in memory only when b loads the room.
    a = await start(cluster, "a", commit_window=30.0)
    b = await start(cluster, "b")
    writer, _, room_a = await a.join("r")
    client: Doc[Any] = Doc()
    room_a.receive(writer, encode_update(append_text(client, "unsaved")))
    assert await cluster[1].load("r") is None
    reader, socket, room_b = await b.join("r")
    room_b.receive(reader, encode_sync_step1(b"\x00"))  # what a y-websocket client sends on connect
    await eventually(lambda: holds(text_of(room_b) == "unsaved" and received_text(socket) == "unsaved"))
    a.crash()  # rather than wait out its commit window at teardown
    cluster[2].remove(a)


async def test_a_room_loading_on_a_second_replica_waits_for_edits_the_first_has_not_stored(
    cluster: Cluster,
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


async def test_edits_made_before_replicas_know_each_other_still_cross(cluster: Cluster) -> None:
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


async def test_a_lost_connection_is_repaired_after_reconnect(cluster: Cluster) -> None:
    shared = await shared_room(cluster)
    shared.edit("1")
    await eventually(lambda: holds(text_of(shared.room_b) == "1"))
    shared.b.broker.disconnect()
    shared.edit("2")
    shared.edit("3")
    await shared.a.replication.outbox.drained()
    assert text_of(shared.room_b) == "1"  # lost on the way
    shared.b.broker.reconnect()
    await eventually(lambda: holds(text_of(shared.room_b) == "123" and received_text(shared.reader) == "123"))


async def test_silent_divergence_is_found_by_the_digest(cluster: Cluster) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    _, _, room_a = await a.join("r")
    _, _, room_b = await b.join("r")
    await eventually(lambda: holds(a.replication.links["r"].replicas == {"b"}))
    await eventually(lambda: holds(b.replication.links["r"].replicas == {"a"}))
    # An update that reached b without an envelope (as if pub/sub dropped it without any Gap).
    client: Doc[Any] = Doc()
    room_b.apply(append_text(client, "quiet"), Replica("ghost"))
    b.replication.links["r"].touch()
    await eventually(lambda: holds(text_of(room_a) == "quiet"))


async def test_a_deletion_alone_is_found_by_the_digest(cluster: Cluster) -> None:
    shared = await shared_room(cluster)
    shared.edit("abcdef")
    await eventually(lambda: holds(text_of(shared.room_b) == "abcdef"))
    # A delete-only update advances no clock: equal state vectors, different delete sets.
    client = shared.client
    before = client.get_state()
    del client.get("t", type=Text)[1:3]
    shared.room_b.apply(client.get_update(before), Replica("ghost"))
    assert doc_of(shared.room_a).get_state() == doc_of(shared.room_b).get_state()
    shared.b.replication.links["r"].touch()
    await eventually(lambda: holds(text_of(shared.room_a) == "adef"))
