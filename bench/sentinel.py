"""A room that is already open, measured while something else loads the server.

One writer and one reader join a room of their own; the writer appends ``"i,"`` to a Y.Text every
``--every`` seconds, and the reader reports, for each ``i``, the time from the writer's send to the
moment the reader holds it: delivery latency p50 / p99 / max, and the worst second. Run it beside a load
(a connect storm with ``bench/idle_memory.py``, a large board, ...) to see what that load costs the rooms
already open on the replica, which is what a loop stall means to a user.

    nice -n -5 .venv/bin/python bench/sentinel.py --url ws://127.0.0.1:8822/ws --seconds 20 &
    taskset -c 1 .venv/bin/python bench/idle_memory.py --url ws://127.0.0.1:8822/ws ...

The sentinel should not wait for a CPU itself: give it a higher priority than the load's client (it
uses a few percent of a core). Loopback only; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.idle_memory import assert_loopback, percentile
from collab_server.protocol import SyncStep2, SyncUpdate, decode_frame, encode_sync_step1, encode_update


async def _synced(ws: ClientConnection) -> None:
    await ws.send(encode_sync_step1(b"\x00"))
    while (await asyncio.wait_for(ws.recv(decode=False), 30))[:2] != b"\x00\x01":
        pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = f"{args.url.rstrip('/')}/sentinel-{uuid.uuid4().hex[:8]}"
    sent: dict[int, float] = {}
    latencies: list[tuple[float, float]] = []  # (when delivered, seconds)
    async with connect(url) as writer, connect(url) as reader:
        await asyncio.gather(_synced(writer), _synced(reader))
        doc: Doc[Any] = Doc()
        text = doc.get("text", type=Text)
        written, all_in = asyncio.Event(), asyncio.Event()

        async def read() -> None:
            seen: Doc[Any] = Doc()
            held = seen.get("text", type=Text)
            delivered = 0
            while True:
                frame = await reader.recv(decode=False)
                for message in decode_frame(frame):
                    if isinstance(message, SyncUpdate | SyncStep2):
                        seen.apply_update(message.update)
                now = time.perf_counter()
                numbers = str(held).split(",")[:-1]
                for number in range(delivered, len(numbers)):
                    latencies.append((now, now - sent[number]))
                delivered = len(numbers)
                if written.is_set() and delivered == len(sent):
                    all_in.set()

        reading = asyncio.create_task(read())
        start = time.perf_counter()
        number = 0
        while time.perf_counter() - start < args.seconds:
            before = doc.get_state()
            text += f"{number},"
            sent[number] = time.perf_counter()
            await writer.send(encode_update(doc.get_update(before)))
            number += 1
            await asyncio.sleep(args.every)
        written.set()
        if len(latencies) == len(sent):
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 30)
        reading.cancel()
    times = sorted(seconds for _, seconds in latencies)
    worst_second: dict[int, float] = {}
    for at, seconds in latencies:
        second = int(at - start)
        worst_second[second] = max(worst_second.get(second, 0.0), seconds)
    return {
        "updates": len(times),
        "latency_p50_ms": round(percentile(times, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(times, 0.99) * 1000, 1),
        "latency_max_ms": round(times[-1] * 1000, 1) if times else 0.0,
        "over_10ms": sum(1 for t in times if t > 0.010),
        "over_50ms": sum(1 for t in times if t > 0.050),
        "over_100ms": sum(1 for t in times if t > 0.100),
        "worst_ms_per_second": [round(worst_second.get(s, 0.0) * 1000, 1) for s in range(int(args.seconds) + 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8822/ws", help="server websocket prefix (loopback only)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the writer writes")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between two updates")
    args = parser.parse_args()
    assert_loopback(args.url)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
