"""A 50 MiB tldraw board on one replica (issue 13): written, synced to a fresh client, compacted, reloaded
after a restart, while sentinels in other rooms measure how long the server keeps them waiting.

    .venv/bin/python bench/large_document.py [--records 100000] [--record-bytes 640]

Starts ``collab-server`` on a fresh SQLite file, or on ``--database-url`` (2 CRDT workers). The board
(the tldraw-yjs layout: ``tl_<room>`` YKeyValue entries plus ``meta``, built by tests/support/boards.py)
is written as updates of 10,000 records each from a raw websocket peer. Two sentinels, one in a room that
the hash puts on the board's CRDT worker and one on the other worker, send a sync step1 every 10 ms and
time the answer (the board itself moves to the worker kept for large rooms as it passes
``COLLAB_LARGE_ROOM_BYTES``, and loads there after the restart). Phases:

1. write: every update sent and accepted (the board's state vector reached), compaction included;
2. fresh sync: a real Yjs client (yjs + y-websocket under Node) joins and is fully synced;
3. restart + load + sync: the server is stopped (rooms saved), started again, and a fresh client
   joins the board, which loads from the stored snapshot;
4. memory: the resident memory of the server and its workers with the board loaded, minus before: after
   the write (transient buffers included) and after the reload (the board as a loaded room holds it).

Reported per phase: its seconds, the sentinels' worst round trip (ms), and the server's own event-loop lag
over the phase (its ``collab_loop_lag_seconds`` histogram: what held up every room's sockets, where the
sentinels' round trips also hold the workers' queues and the CPU the clients got). After each server stops:
its worst loop lag over its whole life and its CPU seconds, from its log. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loop_lag import LAG_BOUNDS, scrape_lag, summarise  # noqa: E402
from collab_server.protocol import encode_update  # noqa: E402
from tests.support.boards import base_records, board_update, geo  # noqa: E402
from tests.support.floods import round_trip, rss_bytes  # noqa: E402
from tests.support.hostile import room_on_other_worker  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402
from tests.support.yjs_clients import YjsClient, YjsNode  # noqa: E402

WORKERS = 2
ROOM = "large-board"


def _same_worker_room(room: str) -> str:
    other = room_on_other_worker(room, WORKERS)
    return room_on_other_worker(other, WORKERS, prefix="same")


class Sentinels:
    """Step1 round trips in each of ``rooms``, every 10 ms; the worst per room since the last ``phase``."""

    def __init__(self, server: ServerProcess, rooms: list[str]) -> None:
        self.server, self.rooms = server, rooms
        self.worst = dict.fromkeys(rooms, 0.0)

    def phase(self) -> list[float]:
        worst = [self.worst[room] for room in self.rooms]
        self.worst = dict.fromkeys(self.rooms, 0.0)
        return worst

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sentinels]:
        stop = asyncio.Event()

        async def watch(room: str) -> None:
            async with connect(f"{self.server.url}/{room}", max_size=None) as ws:
                await ws.recv()
                while not stop.is_set():
                    took = await round_trip(ws)  # awaited first: phase() may reset the worst meanwhile
                    self.worst[room] = max(self.worst[room], took)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.01)

        tasks = [asyncio.create_task(watch(room)) for room in self.rooms]
        try:
            yield self
        finally:
            stop.set()
            await asyncio.gather(*tasks)


def _board(records: int, record_bytes: int) -> list[bytes]:
    """The board as updates of 10,000 records each (the first also holds the base records and meta)."""
    pad = "x" * max(record_bytes - 200, 0)
    updates = []
    for first in range(0, records, 10_000):
        shapes = [geo(f"shape:{i}", x=i % 1000, y=i // 1000, text=pad) for i in range(first, first + 10_000)]
        updates.append(board_update(ROOM, [*base_records(), *shapes] if first == 0 else shapes))
    return updates


async def _write(server: ServerProcess, board: Path) -> None:
    """Write the board from a child process: a client masks every byte it sends (~20 ms per MB here),
    and doing that in this process would hold up the sentinels' own event loop, not the server's. The
    child reads the updates this process built (``_save``): building them takes longer than the write."""
    command = [sys.executable, __file__, "--write", server.url, "--board", str(board)]
    done = await asyncio.to_thread(subprocess.run, command, check=False)
    if done.returncode:
        raise RuntimeError(f"the writer failed ({done.returncode})")


def _save(updates: list[bytes], path: Path) -> None:
    with path.open("wb") as file:
        for update in updates:
            file.write(len(update).to_bytes(8, "little"))
            file.write(update)


def _saved(path: Path) -> list[bytes]:
    data, updates, at = path.read_bytes(), [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 8], "little")
        updates.append(data[at + 8 : at + 8 + size])
        at += 8 + size
    return updates


async def _write_board(url: str, board: Path) -> None:
    updates = _saved(board)
    async with connect(f"{url}/{ROOM}", max_size=None) as ws:
        await ws.recv()
        started = time.perf_counter()
        for update in updates:
            await ws.send(encode_update(update))
        # Accepted once a step1 sent after them is answered (the room handles a peer's frames in order).
        await round_trip(ws)
        print(f"  (the writer: sent and accepted in {time.perf_counter() - started:.2f} s)", flush=True)


class LoopLag:
    """The server's own event-loop lag over a phase, from its ``collab_loop_lag_seconds`` histogram. The
    sentinels' round trips also hold the CRDT workers' queues and the clients' own delays; this is only
    what held up the networking process, and with it every room's sockets."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.last = scrape_lag(server.http)

    def phase(self) -> str:
        now, before = scrape_lag(self.server.http), self.last
        self.last = now
        total = now["count"] - before["count"]
        over = [(bound, total - (now[bound] - before[bound])) for bound in LAG_BOUNDS]
        worst = next((f"over {bound} s" for bound, count in reversed(over) if count), "none over 10 ms")
        over_100ms = dict(over)["0.1"]
        return f"server loop lag: {total:.0f} samples, {over_100ms:.0f} over 100 ms, worst {worst}"


async def _fresh_sync(node: YjsNode, server: ServerProcess) -> tuple[float, YjsClient]:
    """Seconds for a fresh client to be fully synced, and the client (connected: it keeps the room
    loaded until the caller destroys it)."""
    started = time.perf_counter()
    client = await node.connect(server.url, ROOM)
    await client.wait_synced(timeout=300)
    return time.perf_counter() - started, client


async def main(args: argparse.Namespace) -> None:
    if args.write:
        await _write_board(args.write, Path(args.board))
        return
    updates = _board(args.records, args.record_bytes)
    encoded = sum(map(len, updates))
    print(f"board: {args.records:,} records, {len(updates)} updates, {encoded / 2**20:.1f} MiB encoded")
    with tempfile.TemporaryDirectory() as folder:
        board = Path(folder) / "board.bin"
        _save(updates, board)
        del updates
        database = args.database_url or f"sqlite:///{folder}/collab.sqlite3"
        env = {"COLLAB_DATABASE_URL": database, "COLLAB_CRDT_WORKERS": str(WORKERS)}
        server = ServerProcess(env, log_path=Path(args.log)).start()
        rooms = [_same_worker_room(ROOM), room_on_other_worker(ROOM, WORKERS)]
        node = YjsNode(call_timeout=300)
        await node.start()
        try:
            sentinels = Sentinels(server, rooms)
            async with sentinels.running():
                await asyncio.sleep(1)
                sentinels.phase()
                lag = LoopLag(server)
                before = rss_bytes(server)
                started = time.perf_counter()
                await _write(server, board)
                _report("write (with compaction)", time.perf_counter() - started, sentinels.phase(), lag.phase())
                loaded = rss_bytes(server) - before
                took, client = await _fresh_sync(node, server)
                _report("fresh client synced", took, sentinels.phase(), lag.phase())
                await client.destroy()
                print(f"memory after the write: {loaded / 2**20:.0f} MiB = {loaded / encoded:.2f}x its encoded size")
                print(f"compactions: {server.metric('collab_compactions_total', 0):.0f}")
            server.stop()
            print(f"{'':32} whole run: {summarise(Path(args.log))}")
            server.start()
            sentinels = Sentinels(server, rooms)
            async with sentinels.running():
                await asyncio.sleep(1)
                sentinels.phase()
                lag = LoopLag(server)
                before = rss_bytes(server)
                took, client = await _fresh_sync(node, server)
                _report("after a restart: load + sync", took, sentinels.phase(), lag.phase())
                await asyncio.sleep(2)
                loaded = rss_bytes(server) - before
                print(f"memory of the reloaded board: {loaded / 2**20:.0f} MiB = {loaded / encoded:.2f}x encoded")
                await client.destroy()
        finally:
            await node.close()
            server.stop()
        print(f"{'':32} whole run: {summarise(Path(args.log))}")


def _report(phase: str, seconds: float, worst: list[float], lag: str) -> None:
    same, other = (f"{t * 1000:7.1f} ms" for t in worst)
    print(f"{phase:32} {seconds:7.2f} s   sentinels' worst round trip: same worker {same}, other worker {other}")
    print(f"{'':32} {lag}")


def _arguments(argv: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--record-bytes", type=int, default=640, help="about how large each record's JSON is")
    parser.add_argument("--log", default="/tmp/large_document.log", help="the server's log")
    parser.add_argument(
        "--database-url", help="the store (default: a fresh SQLite file); a PostgreSQL database must not hold the room"
    )
    parser.add_argument("--write", metavar="URL", help=argparse.SUPPRESS)  # the writer child process
    parser.add_argument("--board", help=argparse.SUPPRESS)  # the updates it sends (``_save``)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(_arguments()))
