"""Soak: mixed load against one server for a long time, its memory sampled every 10 s.

Is memory flat once warm, or does every cycle of joins, edits, leaves and reconnects leave something
behind? One server (SQLite store, the default; export worker off, so the processes measured are the
server and its CRDT workers) gets, for ``--minutes``:

- a **base** population of idle sockets (``--base`` of them, ``--base-per-room`` per room) that stays
  connected, each sending an awareness update (a cursor) every ``--awareness-every`` seconds;
- every ``--cycle`` seconds a **churn wave**: ``--churn-rooms`` fresh rooms, ``--churn-per-room``
  light clients in each (of which ``--writers-per-room`` send a one-character text edit every
  ``--edit-every`` seconds, and all of them an awareness update every few seconds), plus
  ``--node-clients`` real y-websocket providers (Yjs under Node, tests/js/driver.mjs) that join some of
  those rooms, sync, set their awareness and type. Half-way through the cycle the wave leaves (clean closes,
  ``provider.destroy()``), and its rooms unload after the server's room grace. Rooms are fresh every
  cycle, so the documents in memory do not grow from cycle to cycle: what grows is not a document;
- a quarter into every cycle a **reconnect storm**: ``--storm`` base sockets are dropped (TCP abort, no
  close frame, as a network blip does) and all reconnect at once.

Every simulated client claims its own address in ``X-Forwarded-For`` (the soak is a trusted proxy on
127.0.0.1, uvicorn's default ``FORWARDED_ALLOW_IPS``), as real clients come from many addresses; the
per-address caps and the room-load quota then see realistic numbers. Refusals of any kind are counted
and printed: the run expects none.

Every 10 s the resident set size of the server process and of its children (the CRDT workers) is read
from /proc and written to ``OUT.csv`` with the server's connection and room counts and the machine's
load average. At the end: a least-squares slope of total RSS after ``--warmup`` minutes (MiB per hour),
the same over the one sample per cycle taken when the wave has left and its rooms unloaded (KiB per
cycle), and a plot, ``OUT.svg`` and ``OUT.png`` (the SVG rendered by headless Chromium, which the export
worker uses already: no plotting dependency).

    nice -n 5 .venv/bin/python bench/soak.py --minutes 30 --out docs/soak
    .venv/bin/python bench/soak.py --minutes 2 --cycle 30 --warmup 0.5 --out /tmp/soak-short   # debug

Loopback only; the server is started and stopped by the script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab_server.protocol import (  # noqa: E402
    AwarenessEntry,
    encode_awareness_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from tests.support.servers import ServerProcess  # noqa: E402
from tests.support.yjs_clients import YjsClient, YjsNode  # noqa: E402

SAMPLE_EVERY = 10.0
EMPTY_UPDATE = b"\x00\x00"


def address(n: int) -> str:
    """The client address the n-th simulated client claims (10.0.0.0/8, distinct up to 16M)."""
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass
class Counts:
    connects: int = 0
    connect_failures: int = 0
    edits: int = 0
    awareness: int = 0
    received: int = 0
    storms: list[tuple[int, float, int]] = field(default_factory=list)  # (sockets, seconds, failed)
    node_failures: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)


class LightClient:
    """A socket that speaks the y-websocket protocol like a fresh provider, without a Y.Doc of the room:
    step1 with an empty state vector, step2 (empty) to the server's step1, awareness updates; a writer
    also keeps a pycrdt Doc of its own to make real text edits. Received updates are counted, not merged."""

    def __init__(self, url: str, room: str, client_address: str, counts: Counts, *, writer: bool = False) -> None:
        self.url = f"{url}/{room}"
        self.headers = {"X-Forwarded-For": client_address}
        self.counts = counts
        self.client_id = random.getrandbits(31)
        self.clock = 0
        self.doc: Doc[Any] | None = Doc() if writer else None
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> bool:
        try:
            self.ws = await connect(self.url, additional_headers=self.headers, ping_interval=None, open_timeout=30)
        except Exception as exc:  # refused (HTTP status), reset, timeout: counted, the soak goes on
            self.counts.connect_failures += 1
            self.counts.error(f"connect {self.url}: {exc!r}"[:200])
            return False
        self.counts.connects += 1
        await self.ws.send(encode_sync_step1(b"\x00"))
        await self.awareness()
        self._reader = asyncio.create_task(self._read())
        return True

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                if isinstance(frame, bytes) and frame[:2] == b"\x00\x00":
                    await self.ws.send(encode_sync_step2(EMPTY_UPDATE))
                self.counts.received += 1

    async def awareness(self) -> None:
        if self.ws is None:
            return
        self.clock += 1
        state = json.dumps({"cursor": {"x": random.randint(0, 2000), "y": random.randint(0, 2000)}})
        with contextlib.suppress(Exception):
            await self.ws.send(encode_awareness_message([AwarenessEntry(self.client_id, self.clock, state)]))
            self.counts.awareness += 1

    async def edit(self) -> None:
        if self.ws is None or self.doc is None:
            return
        text = self.doc.get("text", type=Text)
        before = self.doc.get_state()
        if len(text) > 200 and random.random() < 0.5:
            del text[random.randrange(len(text))]
        else:
            text.insert(random.randint(0, len(text)), random.choice("abcdefgh "))
        with contextlib.suppress(Exception):
            await self.ws.send(encode_update(self.doc.get_update(before)))
            self.counts.edits += 1

    def drop(self) -> None:
        """Abort the TCP connection without a close frame (a network blip)."""
        if self.ws is not None:
            self.ws.transport.abort()
        self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        self.ws = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                found.append(int(child))
                found.extend(children(int(child)))
    return found


class Soak:
    def __init__(self, args: argparse.Namespace, server: ServerProcess) -> None:
        self.args = args
        self.server = server
        self.counts = Counts()
        self.next_address = 0
        self.base: list[LightClient] = []
        self.started = time.monotonic()
        self.samples: list[dict[str, float]] = []
        self.stop = asyncio.Event()

    def client(self, room: str, *, writer: bool = False) -> LightClient:
        self.next_address += 1
        return LightClient(self.server.url, room, address(self.next_address), self.counts, writer=writer)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self, node: YjsNode) -> None:
        args = self.args
        base_rooms = max(1, args.base // args.base_per_room)
        self.base = [self.client(f"soak-base-{i % base_rooms}") for i in range(args.base)]
        await self._open_all(self.base, 200)
        print(f"base: {sum(c.ws is not None for c in self.base)} sockets in {base_rooms} rooms", flush=True)
        self.started = time.monotonic()
        tasks = [asyncio.create_task(self._sampler()), asyncio.create_task(self._base_awareness())]
        cycle = 0
        try:
            while self.elapsed() < args.minutes * 60:
                await self._cycle(cycle, node)
                cycle += 1
        finally:
            self.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._sample()  # the last word
            await asyncio.gather(*(c.close() for c in self.base))

    async def _open_all(self, clients: list[LightClient], parallel: int) -> None:
        gate = asyncio.Semaphore(parallel)

        async def one(c: LightClient) -> None:
            async with gate:
                await c.open()

        await asyncio.gather(*(one(c) for c in clients))

    async def _cycle(self, cycle: int, node: YjsNode) -> None:
        args = self.args
        start = self.elapsed()
        rooms = [f"soak-c{cycle}-{r}" for r in range(args.churn_rooms)]
        wave = [
            self.client(room, writer=i < args.writers_per_room) for room in rooms for i in range(args.churn_per_room)
        ]
        await self._open_all(wave, 50)
        providers = await self._providers(node, rooms, cycle)
        leave_at = start + args.cycle / 2
        storm_at = start + args.cycle / 4
        stormed = False
        next_awareness = self.elapsed()
        while self.elapsed() < leave_at:
            if not stormed and self.elapsed() >= storm_at:
                stormed = True
                storm = asyncio.create_task(self._storm())
            writers = [c for c in wave if c.doc is not None]
            await asyncio.gather(*(c.edit() for c in writers))
            for index, provider in enumerate(providers):
                await self._provider_edit(provider, cycle, index)
            if self.elapsed() >= next_awareness:
                await asyncio.gather(*(c.awareness() for c in wave))
                next_awareness = self.elapsed() + 3
            await asyncio.sleep(args.edit_every * random.uniform(0.8, 1.2))
        if stormed:
            await storm
        await asyncio.gather(*(c.close() for c in wave))
        for provider in providers:
            with contextlib.suppress(Exception):
                await provider.destroy()
        await asyncio.sleep(max(0.0, start + args.cycle - self.elapsed()))

    async def _providers(self, node: YjsNode, rooms: list[str], cycle: int) -> list[YjsClient]:
        providers = []
        for i in range(self.args.node_clients):
            self.next_address += 1
            try:
                provider = await node.connect(
                    self.server.url,
                    rooms[i % len(rooms)],
                    headers={"X-Forwarded-For": address(self.next_address)},
                    name=f"p{cycle}-{i}",
                )
                await provider.wait_synced(timeout=30)
                await provider.set_awareness({"user": {"name": f"provider {i}"}, "cursor": None})
                providers.append(provider)
            except Exception as exc:
                self.counts.node_failures += 1
                self.counts.error(f"provider {i}: {exc!r}"[:200])
        return providers

    async def _provider_edit(self, provider: YjsClient, cycle: int, index: int) -> None:
        try:
            await provider.insert_text(0, f"{cycle}.{index} ")
            await provider.set_awareness_field("cursor", {"x": random.randint(0, 999), "y": random.randint(0, 999)})
            self.counts.edits += 1
        except Exception as exc:
            self.counts.node_failures += 1
            self.counts.error(f"provider edit: {exc!r}"[:200])

    async def _storm(self) -> None:
        victims = random.sample(self.base, min(self.args.storm, len(self.base)))
        for c in victims:
            c.drop()
        started = time.monotonic()
        failures_before = self.counts.connect_failures
        await asyncio.gather(*(c.open() for c in victims))
        self.counts.storms.append(
            (len(victims), time.monotonic() - started, self.counts.connect_failures - failures_before)
        )

    async def _base_awareness(self) -> None:
        every = self.args.awareness_every
        while not self.stop.is_set():
            # Spread over the period: one slice of the base every second.
            slice_size = max(1, int(len(self.base) / every))
            for first in range(0, len(self.base), slice_size):
                await asyncio.gather(*(c.awareness() for c in self.base[first : first + slice_size]))
                await asyncio.sleep(1)

    async def _sampler(self) -> None:
        while not self.stop.is_set():
            await self._sample()
            await asyncio.sleep(SAMPLE_EVERY - (self.elapsed() % SAMPLE_EVERY))

    async def _sample(self) -> None:
        assert self.server.process is not None
        pid = self.server.process.pid
        workers = sum(rss_mib(child) for child in children(pid))
        main = rss_mib(pid)

        def metrics() -> tuple[float, float, float]:
            metric = self.server.metric
            names = ("collab_connections", "collab_rooms_loaded", "collab_gc_frozen_objects")
            connections, rooms, frozen = (metric(name, 0) for name in names)
            return connections, rooms, frozen

        connections, rooms, frozen = await asyncio.to_thread(metrics)
        sample = {
            "elapsed_s": round(self.elapsed(), 1),
            "server_rss_mib": round(main, 2),
            "workers_rss_mib": round(workers, 2),
            "total_rss_mib": round(main + workers, 2),
            "connections": connections,
            "rooms_loaded": rooms,
            # The GC policy's frozen objects (collab_server/gc_policy.py): a reference cycle among them is
            # never freed, so a leak of that kind shows as a count that grows from cycle to cycle.
            "gc_frozen_objects": frozen,
            "loadavg_1m": os.getloadavg()[0],
        }
        self.samples.append(sample)
        print(
            f"{sample['elapsed_s']:7.0f} s  server {main:7.1f} MiB  workers {workers:7.1f} MiB  "
            f"{connections:6.0f} sockets  {rooms:4.0f} rooms  {frozen:8.0f} frozen  load {sample['loadavg_1m']:.1f}",
            flush=True,
        )


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def per_cycle(samples: list[dict[str, float]], cycle: float, warmup: float, key: str) -> list[tuple[float, float]]:
    """One point per cycle after warm-up: the sample taken just before the next wave (the previous
    wave gone, its rooms unloaded)."""
    points = []
    for sample in samples:
        t = sample["elapsed_s"]
        phase = t % cycle
        if t >= warmup and phase >= cycle - SAMPLE_EVERY:
            points.append((t // cycle, sample[key]))
    return points


def rss_report(samples: list[dict[str, float]], cycle: float, warmup_minutes: float) -> list[str]:
    """The slopes after warm-up, over all of it and over its second half (is growth slowing down?)."""
    warmup = warmup_minutes * 60
    end = max(s["elapsed_s"] for s in samples)
    lines = []
    for key in ("total_rss_mib", "server_rss_mib", "workers_rss_mib"):
        after = [(s["elapsed_s"] / 3600, s[key]) for s in samples if s["elapsed_s"] >= warmup]
        if not after:
            continue
        late = [(t, v) for t, v in after if t * 3600 >= (warmup + end) / 2]
        cycles = per_cycle(samples, cycle, warmup, key)
        values = [v for _, v in after]
        lines.append(
            f"{key:16} after warm-up: {min(values):.1f}-{max(values):.1f} MiB, slope {slope(after):+.2f} MiB/hour "
            f"(second half {slope(late):+.2f}); end of cycle ({len(cycles)} cycles): "
            f"slope {slope(cycles) * 1024:+.1f} KiB/cycle"
        )
    frozen = per_cycle(samples, cycle, warmup, "gc_frozen_objects") if "gc_frozen_objects" in samples[0] else []
    if frozen:
        values = [v for _, v in frozen]
        lines.append(
            f"gc_frozen_objects at the end of each cycle after warm-up: {min(values):.0f}-{max(values):.0f}, "
            f"slope {slope(frozen):+.1f} objects/cycle"
        )
    return lines


def report(samples: list[dict[str, float]], args: argparse.Namespace, counts: Counts, events: dict[str, float]) -> str:
    lines = rss_report(samples, args.cycle, args.warmup)
    lines.append(
        f"clients: {counts.connects} connects, {counts.connect_failures} failed; {counts.edits} edits, "
        f"{counts.awareness} awareness updates sent, {counts.received} messages received; "
        f"provider failures {counts.node_failures}"
    )
    if counts.storms:
        worst = max(s[1] for s in counts.storms)
        lines.append(
            f"reconnect storms: {len(counts.storms)} x {counts.storms[0][0]} sockets, slowest {worst:.2f} s, "
            f"failed {sum(s[2] for s in counts.storms)}"
        )
    lines.append(
        "server refusals and restarts: " + (", ".join(f"{k}={v:.0f}" for k, v in events.items() if v) or "none")
    )
    for error in counts.errors[:5]:
        lines.append(f"  e.g. {error}")
    return "\n".join(lines)


def svg_plot(samples: list[dict[str, float]], warmup_s: float, title: str) -> str:
    width, height, left, right, top, bottom = 900, 420, 60, 20, 40, 40
    t_max = max(s["elapsed_s"] for s in samples) or 1
    y_max = max(s["total_rss_mib"] for s in samples) * 1.1 or 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(t: float, v: float) -> str:
        return f"{left + t / t_max * plot_w:.1f},{top + plot_h - v / y_max * plot_h:.1f}"

    series = [("total_rss_mib", "#1f4e9c", "server + CRDT workers"), ("server_rss_mib", "#c0392b", "server"),
              ("workers_rss_mib", "#27ae60", "CRDT workers")]  # fmt: skip
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15">{title}</text>',
    ]
    for i in range(6):  # grid and labels
        v = y_max * i / 5
        y = top + plot_h - plot_h * i / 5
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.0f}</text>')
    step = 5 if t_max > 600 else 1
    for minute in range(0, int(t_max / 60) + 1, step):
        x = left + minute * 60 / t_max * plot_w
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle">{minute}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="12" text-anchor="middle">minutes</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" font-size="12" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle">RSS MiB</text>')  # fmt: skip
    wx = left + warmup_s / t_max * plot_w
    out.append(f'<line x1="{wx:.1f}" y1="{top}" x2="{wx:.1f}" y2="{top + plot_h}" stroke="#999" stroke-dasharray="4"/>')
    out.append(f'<text x="{wx + 4:.1f}" y="{top + 12}" font-size="11" fill="#666">warm-up ends</text>')
    for n, (key, colour, label) in enumerate(series):
        points = " ".join(xy(s["elapsed_s"], s[key]) for s in samples)
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        legend_y = top + plot_h - 60 + 16 * n  # bottom right, below the lines
        out.append(f'<text x="{width - right - 200}" y="{legend_y}" font-size="12" fill="{colour}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


def plot(samples: list[dict[str, float]], args: argparse.Namespace) -> None:
    title = f"soak: {args.minutes:g} min, {args.base} idle + churn every {args.cycle:g} s; RSS every 10 s"
    svg_path = args.out.with_suffix(".svg")
    svg_path.write_text(svg_plot(samples, args.warmup * 60, title))
    png = args.out.with_suffix(".png")
    print(f"wrote {svg_path}" + (f", {png}" if render_png(svg_path, png) else " (no Chromium: no PNG)"))


def render_png(svg: Path, png: Path) -> bool:
    chromium = shutil.which("chromium") or os.environ.get("COLLAB_EXPORT_CHROMIUM") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return False
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--window-size=900,420", f"--screenshot={png}", svg.resolve().as_uri()],
            capture_output=True, timeout=120,
        )  # fmt: skip
    return done.returncode == 0 and png.exists()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--cycle", type=float, default=60, help="seconds per churn cycle")
    parser.add_argument("--warmup", type=float, default=5, help="minutes left out of the slope")
    parser.add_argument("--base", type=int, default=1500, help="idle sockets held all along")
    parser.add_argument("--base-per-room", type=int, default=10)
    parser.add_argument("--awareness-every", type=float, default=30, help="seconds between a base socket's updates")
    parser.add_argument("--churn-rooms", type=int, default=60, help="fresh rooms per cycle")
    parser.add_argument("--churn-per-room", type=int, default=5)
    parser.add_argument("--writers-per-room", type=int, default=3)
    parser.add_argument("--edit-every", type=float, default=1.0, help="seconds between a writer's edits")
    parser.add_argument("--node-clients", type=int, default=10, help="y-websocket providers per cycle")
    parser.add_argument("--storm", type=int, default=500, help="base sockets dropped and reconnected per cycle")
    parser.add_argument("--out", type=Path, default=Path("docs/soak"), help="OUT.csv, OUT.svg, OUT.png")
    parser.add_argument("--from-csv", action="store_true", help="run nothing: read OUT.csv, print its slopes, plot")
    args = parser.parse_args()
    if args.from_csv:
        with args.out.with_suffix(".csv").open() as f:
            samples = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        print("\n".join(rss_report(samples, args.cycle, args.warmup)))
        plot(samples, args)
        return

    with tempfile.TemporaryDirectory() as data:
        env = {
            "COLLAB_DATABASE_URL": f"sqlite:///{data}/soak.sqlite3",
            "COLLAB_EXPORT_WORKER": "off",
            "COLLAB_LOG_LEVEL": "warning",
        }
        server = ServerProcess(env=env, log_path=Path(data) / "server.log").start()
        soak = Soak(args, server)
        try:
            async with YjsNode() as node:
                await soak.run(node)
            events = {
                reason: server.metric(f'collab_connections_refused_total{{reason="{reason}"}}', 0)
                for reason in ("replica_full", "pending_full", "address_connections", "address_rooms")
            }
            for reason in ("room_loads", "rate_limited", "load_failed", "internal_error", "too_slow"):
                events[f"closed:{reason}"] = server.metric(f'collab_peers_closed_total{{reason="{reason}"}}', 0)
            events["crdt_worker_restarts"] = server.metric("collab_crdt_worker_restarts_total", 0)
        finally:
            server.stop()
            log_tail = server.log_text()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = args.out.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(soak.samples[0]))
        writer.writeheader()
        writer.writerows(soak.samples)
    print(report(soak.samples, args, soak.counts, events))
    plot(soak.samples, args)
    if "Traceback" in log_tail or "ERROR" in log_tail:
        print("server log tail:\n" + log_tail)


if __name__ == "__main__":
    asyncio.run(main())
