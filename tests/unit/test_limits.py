"""Token buckets, per-address buckets that cannot grow without bound, and the document size quota."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from collab_server.errors import RateExceeded
from collab_server.limits import AddressRates, DocumentSizes, PeerRates, TokenBucket
from collab_server.settings import Settings


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(20))
    assert not bucket.take(1, 0.0)
    assert bucket.take(5, 0.5)  # half a second refilled 5
    assert not bucket.take(1, 0.5)
    assert bucket.take(20, 100.0)  # never more than the burst
    assert not bucket.take(1, 100.0)


def test_a_tldraw_drag_at_60_fps_is_never_slowed_by_the_default_peer_rates() -> None:
    # Settings defaults: 4 MiB/s (burst 48 MiB), 20,000 messages/s (burst 40,000). A drag sends an
    # update and an awareness message per frame, each well under 2 KB.
    # Two minutes of it, plus a join that sends a 30 MB document and 500 messages at once.
    defaults = Settings.from_env({})
    now = [0.0]
    rates = PeerRates(
        defaults.peer_bytes_per_second,
        defaults.peer_bytes_burst,
        defaults.peer_messages_per_second,
        defaults.peer_messages_burst,
        patience=defaults.peer_rate_patience,
        clock=lambda: now[0],
    )
    rates.charge_frame(30_000_000)
    rates.charge_messages(500)
    assert rates.pause() == 0
    for frame in range(60 * 120):
        now[0] = frame / 60
        for _ in range(2):
            rates.charge_frame(2048)
            rates.charge_messages(1)
            assert rates.pause() == 0


def test_a_peer_past_its_rates_is_slowed_then_refused() -> None:
    now = [0.0]
    rates = PeerRates(1000, 5000, 10, 20, patience=4, clock=lambda: now[0])
    rates.charge_frame(5000)
    rates.charge_messages(20)
    assert rates.pause() == 0  # the burst
    rates.charge_messages(10)
    assert rates.pause() == 1.0  # a second of slowing: 10 messages at 10 per second
    now[0] = 1.0  # it waited; the bucket is out of debt, patience 3 s left (refilling 0.5 s/s)
    rates.charge_messages(20)
    assert rates.pause() == 2.0
    now[0] = 3.0  # patience 2.5 s, 3,000 bytes refilled: a frame that needs 3 s more is one too many
    rates.charge_frame(6000)
    with pytest.raises(RateExceeded, match="sending faster than 1000 bytes per second"):
        rates.pause()


def test_room_loads_are_counted_per_address() -> None:
    rates = AddressRates(per_minute=3)
    assert [rates.take("10.0.0.1", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert rates.take("10.0.0.2", now=0.0)
    assert rates.take("10.0.0.1", now=20.0)  # one more per 20 s


def test_address_buckets_are_bounded() -> None:
    rates = AddressRates(per_minute=60, max_addresses=100)
    for i in range(10_000):
        rates.take(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(rates) == 100
    # Refilled buckets are the same as none: they are dropped as soon as anyone takes again.
    rates.take("192.168.0.1", now=120.0)
    assert len(rates) == 1


class _Room:
    def __init__(self, size: int) -> None:
        self.size = size


def test_the_document_quota_measures_once_then_counts_updates() -> None:
    measured: list[Any] = []

    def measure(room: Any) -> int:
        measured.append(room)
        return int(room.size)

    sizes = DocumentSizes(1000, measure, remeasure_after=0)
    room = _Room(500)
    assert sizes.admits(room, 400)
    assert sizes.admits(room, 100)
    assert len(measured) == 1
    # The estimate says 1001: measured again (deletions may have shrunk the document).
    room.size = 700
    assert sizes.admits(room, 1)
    assert len(measured) == 2
    room.size = 990
    assert not sizes.admits(room, 311)
    assert sizes.admits(room, 10)


def test_a_full_document_is_not_measured_at_every_attempt() -> None:
    measured: list[Any] = []

    def measure(room: Any) -> int:
        measured.append(room)
        return int(room.size)

    sizes = DocumentSizes(1000, measure, remeasure_after=3600)
    room = _Room(995)
    for _ in range(100):
        assert not sizes.admits(room, 10)
    assert len(measured) == 1


def test_a_reported_size_replaces_the_estimate() -> None:
    sizes = DocumentSizes(1000, lambda room: 10**9)
    room = _Room(0)
    sizes.set_size(room, 100)
    assert sizes.admits(room, 900)
    assert not sizes.admits(room, 1)


async def test_a_document_in_a_worker_is_measured_in_the_background() -> None:
    measured: list[Any] = []

    async def measure(room: Any) -> int:
        measured.append(room)
        return int(room.size)

    sizes = DocumentSizes(1000, measure, remeasure_after=0)
    room = _Room(990)
    assert sizes.admits(room, 100)  # not measured yet: judged on what was admitted since (100)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert measured == [room]
    assert not sizes.admits(room, 100)  # now 990 + 100 > 1000
    room.size = 100  # deleted content was compacted away
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sizes.admits(room, 100)  # the refusal measured again


async def test_updates_admitted_while_a_measurement_is_in_flight_count_on_top_of_it() -> None:
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def measure(room: Any) -> int:
        return await answer  # taken now, answered late (a busy CRDT worker)

    sizes = DocumentSizes(200_000, measure)
    room = _Room(0)
    assert sizes.admits(room, 50_000)  # starts the measurement, which will see this update
    await asyncio.sleep(0)
    assert sizes.admits(room, 50_000)
    assert sizes.admits(room, 50_000)
    answer.set_result(50_000)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not sizes.admits(room, 60_000)  # 150,000 + 60,000, not 50,000 + 60,000
