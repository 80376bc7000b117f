"""Clients that keep typing while a test breaks things: each appends numbered tokens to a Y.Text of its
own, so "nothing lost" is an exact comparison of texts."""

from __future__ import annotations

import asyncio
import time

from tests.support.eventually import eventually
from tests.support.yjs_clients import YjsClient


class Writer:
    """One client appending ``name:i;`` tokens to its own Y.Text ("text-name") at ``rate`` edits per second.

    Paced, like people typing (fast ones): an unpaced loop on two shared cores makes the clients, the
    servers and the databases fight for CPU, and measures that fight instead of what the test is about.
    """

    def __init__(self, client: YjsClient, name: str, *, rate: float = 200.0) -> None:
        self.client = client
        self.name = name
        self.text_name = f"text-{name}"
        self.rate = rate
        self.count = 0
        self._length = 0

    def token(self, i: int) -> str:
        return f"{self.name}:{i};"

    def expected(self, count: int | None = None) -> str:
        return "".join(self.token(i) for i in range(self.count if count is None else count))

    async def run(self, stop: asyncio.Event) -> None:
        started, first = time.monotonic(), self.count
        while not stop.is_set():
            # pacing, not synchronisation: the next edit is due at a fixed rate from the start
            await asyncio.sleep(max(0.0, started + (self.count - first) / self.rate - time.monotonic()))
            token = self.token(self.count)
            await self.client.insert_text(self._length, token, name=self.text_name)
            self._length += len(token)
            self.count += 1


class Writing:
    """Run writers in the background: ``async with Writing(writers) as writing: ...``."""

    def __init__(self, writers: list[Writer]) -> None:
        self.writers = writers
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Writing:
        self._tasks = [asyncio.create_task(w.run(self._stop)) for w in self.writers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def counts(self) -> dict[str, int]:
        return {w.name: w.count for w in self.writers}

    async def made_at_least(self, more: int, *, since: dict[str, int] | None = None, timeout: float = 30) -> None:
        """Wait until every writer made ``more`` edits since ``since`` (default: now)."""
        marks = self.counts() if since is None else since

        def check() -> None:
            behind = {w.name: w.count - marks[w.name] for w in self.writers if w.count - marks[w.name] < more}
            assert not behind, f"writers short of {more} more edits: {behind}"

        await eventually(check, timeout=timeout)


async def has_everything(client: YjsClient, writers: list[Writer]) -> None:
    for w in writers:
        text = await client.text(w.text_name)
        assert text == w.expected(), f"{client.name} has {text.count(';')}/{w.count} edits of {w.name}"


def lost(writers: list[Writer], texts: dict[str, str]) -> dict[str, int]:
    """Per writer, how many of its tokens are missing from ``texts`` (name → text; tokens are unique)."""
    missing = {}
    for w in writers:
        present = set(texts.get(w.text_name, "").split(";"))
        count = sum(1 for i in range(w.count) if f"{w.name}:{i}" not in present)
        if count:
            missing[w.name] = count
    return missing
