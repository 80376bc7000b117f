"""AppendWriter: group commit, and riding out a store outage without losing an update."""

from __future__ import annotations

from collections.abc import Sequence

from collab_server.errors import StoreUnavailable
from persistence.memory import MemoryStore
from persistence.writer import AppendWriter
from tests.support.eventually import eventually


class FlakyStore(MemoryStore):
    """A MemoryStore whose appends fail while ``down`` is set (a fault we inject, not a mock)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.batches: list[int] = []

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if self.down:
            raise StoreUnavailable("injected outage")
        self.batches.append(len(entries))
        await super().append_many(entries)


async def test_appends_in_one_window_share_one_transaction() -> None:
    store = FlakyStore()
    writer = AppendWriter(store, window=0.01)
    writer.start()
    for i in range(50):
        writer.append(f"room-{i % 3}", bytes([i]))
    await writer.flush(timeout=5)
    assert store.batches == [50]
    loaded = await store.load("room-1")
    assert loaded is not None and loaded.updates == [bytes([i]) for i in range(1, 50, 3)]
    await writer.close()


async def test_an_outage_is_ridden_out_and_nothing_is_lost() -> None:
    store = FlakyStore()
    writer = AppendWriter(store, window=0.001)
    writer.start()
    store.down = True
    for i in range(20):
        writer.append("r", bytes([i]))
    await eventually(lambda: _assert(not writer.healthy))
    assert writer.pending == 20
    store.down = False
    await writer.flush(timeout=10)
    assert writer.healthy
    loaded = await store.load("r")
    assert loaded is not None and loaded.updates == [bytes([i]) for i in range(20)]
    await writer.close()


async def test_the_buffer_bound_is_reported_before_it_is_passed() -> None:
    store = FlakyStore()
    store.down = True
    writer = AppendWriter(store, window=0.001, max_buffer_bytes=100)
    writer.start()
    writer.append("r", b"x" * 60)
    assert writer.can_take(40)
    assert not writer.can_take(41)
    store.down = False
    await writer.flush(timeout=10)
    assert writer.can_take(100)
    await writer.close()


async def test_flush_times_out_with_a_clear_error_while_the_store_is_down() -> None:
    store = FlakyStore()
    store.down = True
    writer = AppendWriter(store, window=0.001)
    writer.start()
    writer.append("r", b"x")
    try:
        await writer.flush(timeout=0.2)
    except StoreUnavailable as exc:
        assert "1 updates still waiting" in str(exc)
    else:
        raise AssertionError("flush returned while the store was down")
    store.down = False
    await writer.close()


def _assert(condition: bool) -> None:
    assert condition
