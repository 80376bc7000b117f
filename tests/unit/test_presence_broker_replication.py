"""BrokerReplication, the hooks RoomManager calls, with several in-process replicas on one LocalHub: an
edit's whole way from a room on one replica to the peers of another, and a room's unload."""

from __future__ import annotations

from tests.support.eventually import eventually
from tests.unit.cluster import Cluster, holds, hub_channels, received_text, shared_room, start, text_of


async def test_an_edit_on_one_replica_reaches_peers_on_the_other_and_is_stored_once(cluster: Cluster) -> None:
    shared = await shared_room(cluster)
    shared.edit("hello")

    def arrived() -> None:
        assert received_text(shared.reader) == "hello"
        assert text_of(shared.room_b) == "hello"

    await eventually(arrived)
    await shared.a.writer.flush()
    await shared.b.writer.flush()
    stored = await cluster[1].load("r")
    # Stored by the replica whose peer made it, never again by the replica that got it from the broker.
    assert stored is not None and len(stored.updates) == 1


async def test_a_replica_that_unloads_the_room_says_so(cluster: Cluster) -> None:
    a, b = await start(cluster, "a"), await start(cluster, "b")
    alice, _, room_a = await a.join("r")
    _, _, _ = await b.join("r")
    await eventually(lambda: holds(b.replication.links["r"].replicas == {"a"}))
    a.rooms.leave(room_a, alice)
    await eventually(lambda: holds(b.replication.links["r"].replicas == set()))
    assert "r" not in hub_channels(cluster[0], "a")
