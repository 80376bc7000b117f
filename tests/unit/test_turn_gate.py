"""``TurnGate``: detached connections start their resume, and arriving ones their app, a few per loop
turn: at once while the turn has starts left, then queued and started per turn by a drain (a task that a
graceful shutdown waits for), resumes before arrivals, each in order."""

from __future__ import annotations

import asyncio
import functools

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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0


async def test_the_arrivals_per_turn_shrink_while_they_take_longer_than_the_budget_and_grow_back() -> None:
    """On a machine half as fast, 32 arrivals a turn made turns of 10-30 ms: the gate times what its starts
    take (here each start itself takes ``cost``) and scales the arrivals it starts next to the budget,
    never below a few nor above ``per_turn``. Resumes, which carry the frames of open rooms, are not held
    to it."""
    tasks: set[asyncio.Task[None]] = set()
    clock = Clock()
    cost = 0.0
    gate = TurnGate(tasks, per_turn=32, budget=0.004, clock=lambda: clock.now)
    started: list[int] = []

    def start(number: int) -> None:
        clock.now += cost
        started.append(number)

    for number in range(300):
        gate.arrive(functools.partial(start, number), asyncio.get_running_loop())
    assert len(started) == 32  # the first turn's, at once

    async def turn_sizes(turns: int) -> list[int]:
        sizes = []
        for _ in range(turns):
            before = len(started)
            await asyncio.sleep(0)
            sizes.append(len(started) - before)
        return sizes

    cost = 0.00025  # 16 of them fit in 4 ms
    assert await turn_sizes(3) == [32, 16, 16]
    cost = 0.002  # two would fit: the fewest, 4
    assert await turn_sizes(3) == [16, 4, 4]
    for number in range(1000, 1040):  # resumes: per_turn of them, and the arrivals wait
        gate.resume(functools.partial(start, number), asyncio.get_running_loop())
    assert await turn_sizes(2) == [32, 8 + 4]  # the last 8 resumes, and as many arrivals as fit
    assert started[-44:-4] == list(range(1000, 1040))
    cost = 0.0001  # 40 would fit: per_turn
    assert await turn_sizes(3) == [4, 32, 32]
    await asyncio.gather(*tasks)
    assert [number for number in started if number < 1000] == list(range(300))  # in order throughout
