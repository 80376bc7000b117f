"""Fan-out across replicas: what the Redis hop costs.

One writer sends small Yjs updates (a few characters typed into a Y.Text) to a room; readers count them as
they arrive. Scenarios (each with fresh server processes, an in-memory store, and a private redis-server):

    single       one replica, COLLAB_BROKER_URL=memory://; writer and readers on it (the baseline)
    redis-local  two replicas on Redis; writer and readers all on replica A (the room stays local)
    redis-cross  two replicas on Redis; writer on A, readers on B: every update crosses Redis
    redis-split  two replicas on Redis; writer on A, half the readers on A and half on B

Two measurements per scenario:

- throughput: closed loop, the writer keeps at most --window updates ahead of the slowest reader;
  updates per second delivered to every reader.
- latency: open loop at --rate updates/s; from the moment an update was due to be sent to its arrival at
  a reader (so a stalled writer counts against the server), p50 / p99 / max over every reader.

Also the servers' CPU time (user + system, from /proc) per update in the throughput run, per replica.

    .venv/bin/python bench/replicas.py                      # all scenarios, default sizes
    .venv/bin/python bench/replicas.py --scenarios single redis-cross --updates 10000

Updates carry a marker ``#000123#`` in their inserted text; the server may merge updates of one tick into
one message, so readers find every marker in each frame's bytes (no Yjs decoding on the reader side).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycrdt import Doc, Text, create_update_message
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402

MARK = re.compile(rb"#(\d{7})#")
SCENARIOS = ("single", "redis-local", "redis-cross", "redis-split")


def make_updates(count: int) -> list[bytes]:
    """``count`` update messages, each inserting ``#NNNNNNN#`` at the end of a Y.Text (made up front, so the
    writer's own cost is not measured)."""
    doc: Doc = Doc()  # type: ignore[type-arg]
    text = doc.get("text", type=Text)
    messages = []
    for seq in range(count):
        before = doc.get_state()
        text.insert(len(text), f"#{seq:07d}#")
        messages.append(create_update_message(doc.get_update(before)))
    return messages


@dataclass
class Reader:
    """One socket counting markers; ``arrivals[seq]`` is when the update first arrived (perf_counter)."""

    url: str
    total: int
    arrivals: list[float] = field(default_factory=list)
    seen: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    ws: ClientConnection | None = None

    def __post_init__(self) -> None:
        self.arrivals = [0.0] * self.total

    async def open(self) -> None:
        self.ws = await connect(self.url, max_size=None, compression=None, ping_interval=None)

    async def run(self) -> None:
        assert self.ws is not None
        arrivals = self.arrivals
        async for frame in self.ws:
            if not isinstance(frame, bytes):
                continue
            now = time.perf_counter()
            for match in MARK.finditer(frame):
                seq = int(match.group(1))
                if seq < len(arrivals) and arrivals[seq] == 0.0:
                    arrivals[seq] = now
                    self.seen += 1
            self.progress.set()
            if self.seen >= self.total:
                return


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    scenario: str
    readers: int
    throughput: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us: dict[str, float]  # server CPU time per update, microseconds, per replica


async def run_phase(
    writer_url: str, reader_urls: list[str], updates: list[bytes], *, window: int | None, rate: float | None
) -> tuple[float, list[float], float]:
    """Send every update; returns (seconds from first send to last arrival, latencies in s, start time)."""
    total = len(updates)
    readers = [Reader(url, total) for url in reader_urls]
    for reader in readers:
        await reader.open()
    async with connect(writer_url, max_size=None, compression=None, ping_interval=None) as writer:
        tasks = [asyncio.create_task(reader.run()) for reader in readers]
        due = [0.0] * total
        start = time.perf_counter()
        for seq, message in enumerate(updates):
            if rate is not None:
                due[seq] = start + seq / rate
                delay = due[seq] - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                due[seq] = time.perf_counter()
                assert window is not None
                while seq - min(reader.seen for reader in readers) >= window:
                    slowest = min(readers, key=lambda r: r.seen)
                    slowest.progress.clear()
                    await slowest.progress.wait()
            await writer.send(message)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    for reader in readers:
        assert reader.ws is not None
        await reader.ws.close()
    end = max(max(reader.arrivals) for reader in readers)
    latencies = [reader.arrivals[seq] - due[seq] for reader in readers for seq in range(total)]
    return end - start, latencies, start


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_scenario(name: str, args: argparse.Namespace, workdir: Path) -> Result:
    redis = RedisServer(workdir).start() if name != "single" else None
    env = {"COLLAB_DATABASE_URL": "memory://", "COLLAB_LOG_LEVEL": "warning", "COLLAB_ROOM_GRACE": "30"}
    if redis is not None:
        env |= {"COLLAB_BROKER_URL": redis.url, "COLLAB_BROKER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"}
    count = 1 if name == "single" else 2
    servers = [ServerProcess(env=dict(env), log_path=workdir / f"{name}-{n}.log").start() for n in range(count)]
    a, b = servers[0], servers[-1]
    try:
        readers_at = {
            "single": [a] * args.readers,
            "redis-local": [a] * args.readers,
            "redis-cross": [b] * args.readers,
            "redis-split": [a, b] * (args.readers // 2),
        }[name]
        cpu: dict[str, float] = {}
        results: dict[str, tuple[float, list[float]]] = {}
        for phase, window, rate, total in (
            ("warmup", 100, None, 500),
            ("throughput", args.window, None, args.updates),
            ("latency", None, args.rate, int(args.rate * args.seconds)),
        ):
            room = f"bench-{phase}-{uuid.uuid4().hex[:8]}"
            # Readers first: on redis-cross the room is loaded on B before the writer's replica loads it.
            reader_urls = [f"{server.url}/{room}" for server in readers_at]
            before = {str(n): cpu_seconds(s.process.pid) for n, s in enumerate(servers) if s.process}
            elapsed, latencies, _ = await run_phase(
                f"{a.url}/{room}", reader_urls, make_updates(total), window=window, rate=rate
            )
            if phase == "throughput":
                for n, server in enumerate(servers):
                    assert server.process is not None
                    cpu["AB"[n]] = (cpu_seconds(server.process.pid) - before[str(n)]) / total * 1e6
            results[phase] = (total / elapsed, latencies)
        _, latencies = results["latency"]
        return Result(
            name,
            len(readers_at),
            results["throughput"][0],
            percentile(latencies, 0.5) * 1000,
            percentile(latencies, 0.99) * 1000,
            max(latencies) * 1000,
            cpu,
        )
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
        if redis is not None:
            redis.stop()


def median_result(results: list[Result]) -> Result:
    """Each figure's median over the rounds."""
    first = results[0]
    return Result(
        first.scenario,
        first.readers,
        statistics.median(r.throughput for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(r.max_ms for r in results),
        {k: statistics.median(r.cpu_us[k] for r in results) for k in first.cpu_us},
    )


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--readers", type=int, default=4, help="reader sockets (even)")
    parser.add_argument("--updates", type=int, default=20000, help="updates in the throughput run")
    parser.add_argument("--window", type=int, default=500, help="updates the writer may be ahead of readers")
    parser.add_argument("--rate", type=float, default=500, help="updates/s in the latency run")
    parser.add_argument("--seconds", type=float, default=6, help="length of the latency run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (scenarios interleaved); medians reported")
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}, load average before: {loadavg()}", flush=True)
    runs: dict[str, list[Result]] = {name: [] for name in args.scenarios}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        for _ in range(args.repeat):
            for name in args.scenarios:
                result = await run_scenario(name, args, Path(tmp))
                runs[name].append(result)
                print(result, flush=True)
    print(f"load average after: {loadavg()}")
    rows = [median_result(results) for results in runs.values()]
    print()
    print(
        "| scenario | readers | throughput (updates/s to every reader) | p50 ms | p99 ms | max ms | "
        "server CPU µs per update |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_us.items())
        print(
            f"| {r.scenario} | {r.readers} | {r.throughput:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.max_ms:.1f} | {cpu} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
