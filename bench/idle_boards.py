"""Many boards open, few of them edited: what the rooms cost in memory when the CRDT workers keep every
document loaded, and when they cool the idle ones (``COLLAB_IDLE_DOCUMENT_SECONDS``); and what the first
edit after cooling waits for its room's rebuild.

    .venv/bin/python bench/idle_boards.py [--boards 200] [--records 1000] [--idle 10]

For each setting (cooling off, then ``--idle`` seconds) a fresh server runs on the in-memory store with
2 CRDT workers, and then the reference y-websocket server (in memory, from the shared harness:
``$YJS_BENCH``, by default ../shared/yjs-bench, set up with its setup.sh) in the same run. Every one of
``--boards`` rooms is written once with the same tldraw board (records shaped like tldraw's geo shapes,
built by bench/document_memory.mjs: 1,000 records are 0.44 MiB), and its writer stays connected.
Reported: the resident memory of the server (and its workers) once the boards are written, and again
``--idle`` + 5 s later; then one edit in every room in turn, each followed by a sync
step1 whose answer, queued behind the edit, shows how long the edit took to apply (the rebuild included
where the room was cooled): p50 and max. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.document_memory import build_board  # noqa: E402
from collab_server.protocol import encode_update  # noqa: E402
from tests.support.floods import round_trip, rss_bytes  # noqa: E402
from tests.support.servers import ServerProcess, free_port  # noqa: E402

HARNESS = Path(os.environ.get("YJS_BENCH", REPO.parent / "shared" / "yjs-bench"))


def _edit(board: bytes) -> bytes:
    """An update appending one record to ``board``: every room holds the same board, so it applies to each."""
    doc: Doc[Any] = Doc()
    doc.apply_update(board)
    before = doc.get_state()
    doc.get("tl_board", type=Array).append({"key": "shape:new", "val": {"id": "shape:new", "typeName": "shape"}})
    return doc.get_update(before)


async def _open(url: str, room: str, board: bytes) -> ClientConnection:
    ws = await connect(f"{url}/{room}", max_size=None)
    await asyncio.wait_for(ws.recv(), 30)  # the server's step1: the room is loaded
    await ws.send(encode_update(board))
    await round_trip(ws)  # answered once the board is applied
    return ws


@contextlib.asynccontextmanager
async def ours(idle: float, log: Path) -> AsyncIterator[tuple[str, Any]]:
    """Our server; its websocket URL, and what reads its memory (the server's and its workers')."""
    env = {
        "COLLAB_DATABASE_URL": "memory://",
        "COLLAB_CRDT_WORKERS": "2",
        "COLLAB_IDLE_DOCUMENT_SECONDS": str(idle),
        "COLLAB_MAX_ROOMS_PER_ADDRESS": "1000000",
        "COLLAB_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
        "COLLAB_ROOM_LOADS_PER_MINUTE": "1000000",
    }
    server = ServerProcess(env, log_path=log).start()
    try:
        yield server.url, lambda: rss_bytes(server)
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def reference() -> AsyncIterator[tuple[str, Any]]:
    """The reference y-websocket server (Node, in memory)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(HARNESS / "peers" / "ywebsocket.sh"), str(port), stdout=subprocess.DEVNULL
    )  # the script execs node: one process, this one
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                (await connect(f"ws://127.0.0.1:{port}/probe")).transport.close()
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"the reference server did not start (is {HARNESS} set up?)")
        yield f"ws://127.0.0.1:{port}", lambda: _resident(process.pid)
    finally:
        process.terminate()
        await process.wait()


def _resident(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def _run(args: argparse.Namespace, board: bytes, edit: bytes, label: str, target: Any, wait: float) -> None:
    sockets: list[ClientConnection] = []
    async with target as (url, resident):
        await asyncio.sleep(1)
        before = resident()
        for i in range(args.boards):
            sockets.append(await _open(url, f"board-{i}", board))
        written = resident() - before
        await asyncio.sleep(wait)
        later = resident() - before
        times = []
        for ws in sockets:
            started = time.perf_counter()
            await ws.send(encode_update(edit))
            await round_trip(ws)
            times.append(time.perf_counter() - started)
        edited = resident() - before
        encoded = len(board) * args.boards
        print(
            f"| {label} | {written / 2**20:,.0f} MiB = {written / encoded:.1f}x "
            f"| {later / 2**20:,.0f} MiB = {later / encoded:.1f}x "
            f"| {statistics.median(times) * 1000:.1f} / {max(times) * 1000:.1f} ms "
            f"| {edited / 2**20:,.0f} MiB = {edited / encoded:.1f}x |"
        )
        for ws in sockets:
            await ws.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boards", type=int, default=200)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--log", default="/tmp/idle_boards.log")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        board = build_board("tldraw", args.records, Path(folder) / "board.bin")
    edit = _edit(board)
    print(
        f"{args.boards} boards of {args.records:,} records, {len(board) / 2**20:.2f} MiB each "
        f"({len(board) * args.boards / 2**20:,.0f} MiB encoded in all); memory is the server's and its workers'"
    )
    print("| server | memory, boards written | memory, idle | first edit after, p50 / max | memory, edited |")
    print("|---|---|---|---|---|")
    wait = args.idle + 5
    log = Path(args.log)
    await _run(args, board, edit, "ours, never cooled", ours(0, log), wait)
    await _run(args, board, edit, f"ours, cooled after {args.idle:g} s", ours(args.idle, log), wait)
    await _run(args, board, edit, "reference y-websocket", reference(), wait)


if __name__ == "__main__":
    asyncio.run(main())
