"""``PollClock``: the frame budget of a poll counts from its first socket read, for every socket read in
that poll, and afresh in the next poll."""

from __future__ import annotations

import asyncio

from collab_server.transport import PollClock


async def test_every_read_of_a_poll_counts_from_its_first() -> None:
    clock = PollClock(asyncio.get_running_loop())
    assert clock.started(10.0) == 10.0
    assert clock.started(10.003) == 10.0  # another socket read in the same poll
    await asyncio.sleep(0)  # the loop ran its ready callbacks: the next poll
    assert clock.started(11.0) == 11.0
    assert clock.started(11.5) == 11.0
