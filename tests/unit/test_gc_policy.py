"""GcPolicy: what it leaves to the collector, and what it takes away."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from collab_server.gc_policy import GcPolicy
from tests.support.eventually import eventually


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test process's objects go back to the collector afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_each_tick_collects_the_young_garbage_and_freezes_the_survivors(unfrozen: None) -> None:
    policy = GcPolicy(0.01).start()
    try:
        gc.disable()  # only the policy collects here
        kept = Cycle()
        dropped = Cycle()
        gone = weakref.ref(dropped)
        del dropped  # garbage only the collector can free
        await eventually(lambda: _asserted(policy.ticks >= 2))
        assert gone() is None  # collected before the freeze, not frozen with the rest
        # the survivors are out of the collector's walks
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())
    finally:
        gc.enable()
        policy.stop()


async def test_interval_zero_leaves_the_collector_alone(unfrozen: None) -> None:
    policy = GcPolicy(0).start()
    assert policy._handle is None and gc.get_freeze_count() == 0


async def test_the_frozen_count_is_read_once_a_minute_not_at_every_tick(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gc.get_freeze_count()`` walks every frozen object: at every tick it stalled the loop."""
    reads: list[int] = []

    def counted() -> int:
        reads.append(1)
        return 0

    monkeypatch.setattr(gc, "get_freeze_count", counted)
    policy = GcPolicy(0.001).start()
    try:
        await eventually(lambda: _asserted(policy.ticks >= 5))
        assert len(reads) == 1  # the first tick's; the next is 60 ticks later
    finally:
        policy.stop()


async def test_thresholds_hold_while_the_policy_runs_and_are_restored_after() -> None:
    before = gc.get_threshold()
    policy = GcPolicy(0, (2000, 10, 100)).start()
    try:
        assert gc.get_threshold() == (2000, 10, 100)
    finally:
        policy.stop()
    assert gc.get_threshold() == before


def _asserted(condition: bool) -> None:
    assert condition


def test_what_start_up_built_is_frozen_once_and_its_garbage_collected_first(unfrozen: None) -> None:
    gc.disable()  # only the policy collects here
    try:
        built = Cycle()
        garbage = Cycle()
        gone = weakref.ref(garbage)
        del garbage
        GcPolicy(0).freeze_startup()
        assert gone() is None  # collected, not frozen
        assert gc.get_freeze_count() > 0 and not any(obj is built for obj in gc.get_objects())
        later = Cycle()
        assert any(obj is later for obj in gc.get_objects())  # what comes after is the collector's as before
    finally:
        gc.enable()
