"""The Broker and PresenceRegistry contracts, one body per promise, run on every backend (local, redis)."""

from __future__ import annotations

import asyncio
import time

import pytest

from collab_server.errors import BrokerError
from presence.broker import Broker, Delivery, Envelope, Gap, Kind, Subscription
from presence.registry import PresenceEntry
from tests.contract.conftest_broker import BrokerBackend
from tests.support.eventually import eventually


async def collect(subscription: Subscription, count: int, timeout: float = 5.0) -> list[Delivery]:
    """The next ``count`` deliveries of a subscription."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.extend(await subscription.next_batch())
    return got


def envelopes(deliveries: list[Delivery]) -> list[Envelope]:
    return [d for d in deliveries if isinstance(d, Envelope)]


def update(replica: str, payload: bytes, target: str = "") -> Envelope:
    return Envelope(replica, Kind.UPDATE, payload, target)


async def test_other_replicas_receive_what_one_publishes_but_it_does_not(broker_backend: BrokerBackend) -> None:
    a, b, c = [await broker_backend.broker(name) for name in "abc"]
    async with a.subscribe("room") as heard_a, b.subscribe("room") as heard_b, c.subscribe("room") as heard_c:
        await a.publish([("room", update("a", b"from a"))])
        await b.publish([("room", update("b", b"from b"))])
        assert envelopes(await collect(heard_b, 1)) == [update("a", b"from a")]
        assert envelopes(await collect(heard_c, 2)) == [update("a", b"from a"), update("b", b"from b")]
        assert envelopes(await collect(heard_a, 1)) == [update("b", b"from b")]


async def test_envelopes_from_one_publisher_arrive_in_order(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    async with b.subscribe("room") as heard:
        sent = [update("a", f"{n}".encode()) for n in range(300)]
        await a.publish([("room", envelope) for envelope in sent[:100]])
        for envelope in sent[100:]:
            await a.publish([("room", envelope)])
        assert envelopes(await collect(heard, 300)) == sent


async def test_every_kind_and_field_survives_the_trip(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("replica-ä"), await broker_backend.broker("b")
    async with b.subscribe("room/with spaces/ü") as heard:
        sent = [Envelope("replica-ä", kind, bytes([kind]) * kind) for kind in Kind]
        sent.append(Envelope("replica-ä", Kind.SYNC_STEP2, b"", target="b"))
        await a.publish([("room/with spaces/ü", envelope) for envelope in sent])
        assert envelopes(await collect(heard, len(sent))) == sent


async def test_an_envelope_for_another_replica_is_not_delivered(broker_backend: BrokerBackend) -> None:
    a, b, c = [await broker_backend.broker(name) for name in "abc"]
    async with b.subscribe("room") as heard_b, c.subscribe("room") as heard_c:
        await a.publish([("room", update("a", b"for c", target="c")), ("room", update("a", b"all"))])
        assert envelopes(await collect(heard_c, 2)) == [update("a", b"for c", "c"), update("a", b"all")]
        assert envelopes(await collect(heard_b, 1)) == [update("a", b"all")]


async def test_rooms_are_separate_channels(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    async with b.subscribe("one") as one, b.subscribe("two") as two:
        await a.publish([("one", update("a", b"1")), ("two", update("a", b"2")), ("none", update("a", b"3"))])
        assert envelopes(await collect(one, 1)) == [update("a", b"1")]
        assert envelopes(await collect(two, 1)) == [update("a", b"2")]
        await a.publish([("one", update("a", b"end"))])
        assert envelopes(await collect(one, 1)) == [update("a", b"end")]
        assert len(two) == 0


async def test_what_is_published_once_subscribe_returned_is_delivered(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    for n in range(20):  # catch a subscribe that returns before the channel is live
        async with b.subscribe(f"room-{n}") as heard:
            await a.publish([(f"room-{n}", update("a", b"first"))])
            assert envelopes(await collect(heard, 1)) == [update("a", b"first")]


async def test_nothing_arrives_after_unsubscribing_and_resubscribing_works(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    async with b.subscribe("room") as first:
        pass
    await a.publish([("room", update("a", b"nobody listens"))])
    assert len(first) == 0
    with pytest.raises(EOFError):
        await first.next_batch()
    async with b.subscribe("room") as second, b.subscribe("room") as third:
        await a.publish([("room", update("a", b"again"))])
        assert envelopes(await collect(second, 1)) == [update("a", b"again")]
        assert envelopes(await collect(third, 1)) == [update("a", b"again")]


async def test_two_subscriptions_of_one_room_are_independent(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    async with b.subscribe("room") as staying:
        async with b.subscribe("room"):
            pass  # leaving must not unsubscribe the channel under the one that stays
        await a.publish([("room", update("a", b"still here"))])
        assert envelopes(await collect(staying, 1)) == [update("a", b"still here")]


async def test_a_large_payload_arrives_whole(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    big = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: split in parts on Redis
    async with b.subscribe("room") as heard:
        await a.publish([("room", update("a", big)), ("room", update("a", b"small after"))])
        assert envelopes(await collect(heard, 2)) == [update("a", big), update("a", b"small after")]


async def test_a_subscriber_too_far_behind_gets_a_gap_and_others_are_unaffected(
    broker_backend: BrokerBackend,
) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    async with b.subscribe("slow") as slow, b.subscribe("fine") as fine:
        slow.max_messages = 10
        await a.publish([("slow", update("a", b"%d" % n)) for n in range(25)] + [("fine", update("a", b"ok"))])
        assert envelopes(await collect(fine, 1)) == [update("a", b"ok")]
        got = await collect(slow, 1)
        assert isinstance(got[0], Gap)
        await a.publish([("slow", update("a", b"later"))])
        tail = envelopes(await collect(slow, 1))
        assert tail[-1] == update("a", b"later")


async def test_a_broken_connection_is_followed_by_a_gap_and_delivery_resumes(broker_backend: BrokerBackend) -> None:
    a, b = await broker_backend.broker("a"), await broker_backend.broker("b")
    async with b.subscribe("room") as heard:
        await broker_backend.cut(b)
        got = await collect(heard, 1)
        assert [type(d) for d in got] == [Gap]

        async def delivered() -> None:
            # Publishing until one arrives: the subscriber may still be reconnecting.
            await a.publish([("room", update("a", b"after"))])
            batch = await asyncio.wait_for(heard.next_batch(), 0.5)
            assert update("a", b"after") in batch

        await eventually(lambda: _retry_timeouts(delivered), timeout=10)


async def _retry_timeouts(check: object) -> None:
    assert callable(check)
    try:
        await check()
    except TimeoutError as exc:
        raise AssertionError("nothing delivered yet") from exc


async def test_publishing_to_an_unreachable_backend_raises_broker_error(broker_backend: BrokerBackend) -> None:
    broker: Broker
    if broker_backend.name == "redis":
        from presence.redis_broker import RedisBroker

        broker = RedisBroker("redis://127.0.0.1:1/0", "lonely")  # nothing listens on port 1
    else:
        from presence.local import LocalBroker, LocalHub

        broker = LocalBroker(LocalHub(), "lonely")
        broker.disconnect()
    await broker.start()
    try:
        with pytest.raises(BrokerError):
            await broker.publish([("room", update("lonely", b"x"))])
        # Subscribing still works (a replica serves its own peers without the broker).
        async with asyncio.timeout(5):
            async with broker.subscribe("room") as subscription:
                assert len(subscription) == 0
    finally:
        await broker.close()


# -- presence registry ------------------------------------------------------------------------------


def entry(client_id: int, replica: str, user: str | None = "Ann", last_seen: float | None = None) -> PresenceEntry:
    return PresenceEntry(client_id, user, "#123456", replica, time.time() if last_seen is None else last_seen)


async def test_presence_entries_are_listed_until_removed(broker_backend: BrokerBackend) -> None:
    registry = await broker_backend.registry()
    await registry.heartbeat("a", 6.0)
    first, second = entry(1, "a", "Ann"), entry(2, "a", None)
    await registry.write("room", [first, second], [])
    assert await registry.list("room") == [first, second]
    assert await registry.list("other room") == []
    await registry.write("room", [], [1])
    assert await registry.list("room") == [second]
    await registry.write("room", [], [2, 99])
    assert await registry.list("room") == []


async def test_presence_of_a_replica_without_heartbeat_is_not_listed_and_can_be_pruned(
    broker_backend: BrokerBackend,
) -> None:
    registry = await broker_backend.registry()
    await registry.heartbeat("alive", 0.3)
    await registry.heartbeat("dying", 0.3)
    await registry.write("room", [entry(1, "alive"), entry(2, "dying"), entry(3, "never")], [])
    assert await registry.alive({"alive", "dying", "never"}) == {"alive", "dying"}

    async def dying_expired() -> None:
        await registry.heartbeat("alive", 0.3)
        assert await registry.alive({"alive", "dying"}) == {"alive"}

    await eventually(dying_expired, timeout=5)
    assert [e.client_id for e in await registry.list("room")] == [1]
    assert await registry.prune("room", {"dying", "never"}) == 2
    await registry.leave("alive")
    assert await registry.alive({"alive"}) == set()
    assert await registry.list("room") == []
    await registry.heartbeat("alive", 0.3)
    assert [e.client_id for e in await registry.list("room")] == [1]


async def test_stale_presence_entries_are_not_listed(broker_backend: BrokerBackend) -> None:
    registry = await broker_backend.registry(ttl=30)
    await registry.heartbeat("a", 6.0)
    await registry.write("room", [entry(1, "a", last_seen=time.time() - 60), entry(2, "a")], [])
    assert [e.client_id for e in await registry.list("room")] == [2]
