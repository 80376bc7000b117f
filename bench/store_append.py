"""Append latency of the group commit, exactly: from an update's arrival at the writer to its commit.

The server's histogram (``collab_store_commit_seconds``) has coarse buckets; this drives the real
``AppendWriter`` and a real store in one process, open loop at ``--rate`` updates/s spread over
``--rooms`` rooms, and times every single update. ``--busy-ms`` / ``--busy-tasks`` keep the event loop
busy the way a fan-out does (tasks that each hold the loop for ``busy-ms`` between yields), because a
commit's latency is mostly the event-loop iterations it has to wait for.

    .venv/bin/python bench/store_append.py                          # memory and postgres, 5 s each
    .venv/bin/python bench/store_append.py --stores postgres --rate 8000 --busy-tasks 4

PostgreSQL runs get a database of their own (COLLAB_BENCH_POSTGRES_URL, default the local server).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from persistence.base import DocumentStore
from persistence.writer import AppendWriter

ADMIN_URL = os.environ.get("COLLAB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class TimedStore:
    """Delegates to a store and notes when each update's batch committed."""

    def __init__(self, inner: DocumentStore, arrivals: dict[bytes, float], latencies: list[float]) -> None:
        self.inner = inner
        self.arrivals = arrivals
        self.latencies = latencies
        self.batches = 0

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        await self.inner.append_many(entries)
        now = time.perf_counter()
        self.batches += 1
        for _, update in entries:
            self.latencies.append(now - self.arrivals.pop(update))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


async def run(store_name: str, args: argparse.Namespace) -> dict[str, float]:
    database = None
    store: DocumentStore
    if store_name == "postgres":
        from persistence.postgres import PostgresStore

        database = f"collab_bench_{uuid.uuid4().hex[:10]}"
        await _admin(f'CREATE DATABASE "{database}"')
        store = await PostgresStore.connect(urlsplit(ADMIN_URL)._replace(path=f"/{database}").geturl())
    else:
        from persistence.memory import MemoryStore

        store = MemoryStore()
    arrivals: dict[bytes, float] = {}
    latencies: list[float] = []
    timed = TimedStore(store, arrivals, latencies)
    writer = AppendWriter(timed, window=args.window_ms / 1000)  # type: ignore[arg-type]
    writer.start()
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            _busy(args.busy_ms)
            await asyncio.sleep(0)

    loaders = [asyncio.create_task(load()) for _ in range(args.busy_tasks)]
    ids = itertools.count()
    started = time.perf_counter()
    sent = 0
    try:
        while (elapsed := time.perf_counter() - started) < args.seconds:
            due = int(elapsed * args.rate)
            while sent < due:
                n = next(ids)
                update = n.to_bytes(8, "big") + b"\x00" * 22  # ~30 bytes, the size of a typed character
                arrivals[update] = time.perf_counter()
                writer.append(f"room-{n % args.rooms}", update)
                sent += 1
            await asyncio.sleep(0.001)
        await writer.flush(timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
        await writer.close()
        await store.close()
        if database is not None:
            await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "updates": len(latencies),
        "batches": timed.batches,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", default=["memory", "postgres"])
    parser.add_argument("--rate", type=float, default=7000, help="updates per second (open loop)")
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--busy-tasks", type=int, default=0, help="tasks keeping the event loop busy")
    parser.add_argument("--busy-ms", type=float, default=1.0, help="how long each holds the loop per turn")
    args = parser.parse_args()
    print("| store | updates | commits | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for name in args.stores:
        r = await run(name, args)
        print(
            f"| {name} | {r['updates']:,.0f} | {r['batches']:,.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['max_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()  # as under uvicorn
    except ImportError:
        pass
    asyncio.run(main())
