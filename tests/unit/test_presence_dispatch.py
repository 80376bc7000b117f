"""What arrives on a room's channel (presence.dispatch): the origin rule, and envelopes that cannot be handled."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc

from collab_server.protocol import encode_update
from presence.broker import Envelope, Kind
from presence.local import LocalBroker
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.cluster import Cluster, holds, start, text_of


async def test_updates_from_a_replica_are_not_published_again(cluster: Cluster) -> None:
    hub, _, _ = cluster
    a, b = await start(cluster, "a"), await start(cluster, "b")
    spy = LocalBroker(hub, "spy")
    async with spy.subscribe("r") as heard:
        writer, _, room_a = await a.join("r")
        _, _, room_b = await b.join("r")
        await eventually(lambda: holds(a.replication.links["r"].replicas >= {"b"}))
        client: Doc[Any] = Doc()
        room_a.receive(writer, encode_update(append_text(client, "x")))
        await eventually(lambda: holds(text_of(room_b) == "x"))
        await a.replication.outbox.drained()
        await b.replication.outbox.drained()
        updates = [e for e in await heard.next_batch() if isinstance(e, Envelope) and e.kind is Kind.UPDATE]
        assert [e.replica for e in updates] == ["a"]


async def test_a_broken_envelope_costs_only_itself(cluster: Cluster) -> None:
    hub, _, _ = cluster
    b = await start(cluster, "b")
    _, _, room = await b.join("r")
    _, _, other_room = await b.join("other")
    evil = LocalBroker(hub, "evil")
    client: Doc[Any] = Doc()
    await evil.publish(
        [
            ("r", Envelope("evil", Kind.UPDATE, b"\xff\xff\xff not an update")),
            ("r", Envelope("evil", Kind.SYNC_STEP1, b"\x05")),
            ("r", Envelope("evil", Kind.AWARENESS, b"\x01\x09garbage")),
            ("r", Envelope("evil", Kind.UPDATE, append_text(client, "fine"))),
            ("other", Envelope("evil", Kind.UPDATE, append_text(Doc(), "also fine"))),
        ]
    )
    await eventually(lambda: holds(text_of(room) == "fine" and text_of(other_room) == "also fine"))
