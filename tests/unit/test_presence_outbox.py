"""Publishing (presence.outbox): failed publishes repaired once publishing works, and the bulk lane."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pycrdt import Doc

from collab_server.protocol import encode_update
from presence.broker import Envelope
from presence.local import LocalBroker
from presence.outbox import BULK_THRESHOLD
from tests.support.documents import append_text
from tests.support.eventually import eventually
from tests.unit.cluster import Cluster, holds, shared_room, start, text_of


async def test_failed_publishes_are_repaired_once_publishing_works(cluster: Cluster) -> None:
    shared = await shared_room(cluster)
    shared.edit("1")
    await eventually(lambda: holds(text_of(shared.room_b) == "1"))
    shared.a.broker._connected = False  # publishes fail; nothing tells b (no Gap on its side)
    shared.edit("2")
    await eventually(lambda: holds("r" in shared.a.replication.outbox.dirty))
    shared.a.broker._connected = True
    shared.edit("3")
    await eventually(lambda: holds(text_of(shared.room_b) == "123"))


class GatedBroker(LocalBroker):
    """A LocalBroker whose publishes of large payloads wait for ``gate``: a stand-in for a slow Redis
    write of a huge message (which we cannot make slow on purpose with a real one)."""

    gate: asyncio.Event

    async def publish(self, batch: Sequence[tuple[str, Envelope]]) -> None:
        if any(len(envelope.payload) > BULK_THRESHOLD for _, envelope in batch):
            await self.gate.wait()
        await super().publish(batch)


async def test_a_huge_update_in_one_room_does_not_hold_back_another_rooms(cluster: Cluster) -> None:
    gated = GatedBroker(cluster[0], "a")
    gated.gate = asyncio.Event()
    a = await start(cluster, "a", broker=gated)
    b = await start(cluster, "b")
    writer_a, _, big_a = await a.join("big")
    small_writer, _, small_a = await a.join("small")
    _, _, big_b = await b.join("big")
    _, _, small_b = await b.join("small")
    await eventually(lambda: holds(a.replication.links["small"].replicas == {"b"}))
    await eventually(lambda: holds(a.replication.links["big"].replicas == {"b"}))
    big_a.receive(writer_a, encode_update(append_text(Doc(), "x" * (2 * BULK_THRESHOLD))))
    small_a.receive(small_writer, encode_update(append_text(Doc(), "quick")))
    await eventually(lambda: holds(text_of(small_b) == "quick"))
    assert text_of(big_b) == ""  # still on its way
    gated.gate.set()
    await eventually(lambda: holds(len(text_of(big_b)) == 2 * BULK_THRESHOLD))
