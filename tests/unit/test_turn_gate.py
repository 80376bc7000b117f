"""``TurnGate``: detached connections start their resume, and arriving ones their app, a few per loop
turn: at once while the turn has starts left, then queued and started per turn by a drain (a task that a
graceful shutdown waits for), resumes before arrivals, each in order."""

from __future__ import annotations

import asyncio

from collab_server.transport import TurnGate


def _gate_with(added: int, per_turn: int) -> tuple[TurnGate, set[asyncio.Task[None]], list[int]]:
    """A gate, its server's task set, and the numbers of the starts it called (``added`` added)."""
    tasks: set[asyncio.Task[None]] = set()
    gate = TurnGate(tasks, per_turn=per_turn)
    started: list[int] = []
    for number in range(added):
        _add(gate, number, started)
    return gate, tasks, started


def _add(gate: TurnGate, number: int, started: list[int]) -> None:
    gate.resume(lambda: started.append(number), asyncio.get_running_loop())


def _arrive(gate: TurnGate, number: int, started: list[int]) -> None:
    gate.arrive(lambda: started.append(number), asyncio.get_running_loop())


async def test_a_burst_starts_per_turn_at_a_time_in_order() -> None:
    gate, tasks, started = _gate_with(8, per_turn=3)
    assert started == [0, 1, 2]  # the turn's starts, at once
    assert len(tasks) == 1  # one drain, in the server's task set, for the rest
    assert len(gate) == 5

    per_turn = []
    while len(started) < 8:
        before = len(started)
        await asyncio.sleep(0)  # one loop turn: the drain takes one step
        per_turn.append(len(started) - before)
    assert per_turn == [3, 2]
    assert started == list(range(8))

    await next(iter(tasks))  # the drain finds the queue empty and ends
    assert not tasks
    assert len(gate) == 0


async def test_a_new_turn_has_its_starts_again() -> None:
    gate, tasks, started = _gate_with(2, per_turn=2)
    assert started == [0, 1] and not tasks
    await asyncio.sleep(0)
    _add(gate, 2, started)
    _add(gate, 3, started)
    assert started == [0, 1, 2, 3] and not tasks  # nothing waited: no drain


async def test_once_the_turn_s_starts_are_spent_a_new_one_waits_for_the_next_turn() -> None:
    gate, tasks, started = _gate_with(4, per_turn=2)
    await asyncio.sleep(0)  # a new turn, whose starts the drain spends
    assert started == [0, 1, 2, 3] and len(gate) == 0
    _add(gate, 4, started)  # nothing waits, but this turn has no starts left
    assert started == [0, 1, 2, 3] and len(gate) == 1
    await asyncio.sleep(0)
    assert started == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)
    assert not tasks


async def test_resumes_that_wait_go_before_the_arrivals_that_wait() -> None:
    """A storm of newcomers must not hold up the frames of rooms already open."""
    tasks: set[asyncio.Task[None]] = set()
    gate = TurnGate(tasks, per_turn=2)
    started: list[int] = []
    for number in range(4):
        _arrive(gate, number, started)  # 0 and 1 at once, 2 and 3 wait
    _add(gate, 100, started)
    _add(gate, 101, started)
    _add(gate, 102, started)
    await asyncio.gather(*tasks)
    assert started == [0, 1, 100, 101, 102, 2, 3]
