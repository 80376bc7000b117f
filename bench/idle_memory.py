"""Server memory per idle websocket connection.

Opens N idle y-websocket-protocol connections (R rooms of P peers each) to a server on loopback, holds
them, and reports the growth of the server's resident set size divided by the number of connections,
like the ``connections`` scenario of the yjs-bench harness.

Each client does what a fresh y-websocket provider (and the bench's "light" client) does on the wire:
sends sync step1 with an empty state vector and its awareness state ``{}``, answers the server's sync
step1 with an empty step2, and counts as established when the server's step2 arrives. It then sits idle,
answering keepalive pings.

    # against a running server
    python bench/idle_memory.py --url ws://127.0.0.1:8822/ws --server-pid PID
    # or let the script start (and stop) a server with an in-memory store
    python bench/idle_memory.py --url ws://127.0.0.1:8822/ws --spawn

Only loopback URLs are accepted; the script stops by itself (after --hold seconds, or --deadline).
Server RSS is summed over the server process and its children, read from /proc (Linux).

Each client's time from opening its socket to the server's sync step2 is reported (p50, p99, max; the
client runs without its cyclic collector, whose pauses would otherwise be the p99), and
sockets refused at the upgrade are counted by HTTP status. By default each client claims an address of
its own in ``X-Forwarded-For`` (``--addresses 0``): collab-server trusts it from 127.0.0.1, so its
per-address caps and room-load quota see what 10,000 real clients from many addresses would make them
see, rather than one address opening 1,000 rooms; servers that do not read the header ignore it.
``--addresses N`` spreads the clients over N addresses instead, ``--addresses 1`` sends none.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loop_lag import LAG_BOUNDS, scrape_lag

MSG_SYNC = 0
MSG_AWARENESS = 1
SYNC_STEP1 = 0
SYNC_STEP2 = 1


def var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def var_bytes(b: bytes) -> bytes:
    return var_uint(len(b)) + b


def sync_step1_empty() -> bytes:
    return bytes([MSG_SYNC, SYNC_STEP1]) + var_bytes(b"\x00")  # empty state vector


def sync_step2_empty() -> bytes:
    return bytes([MSG_SYNC, SYNC_STEP2]) + var_bytes(b"\x00\x00")  # an empty update


def awareness_update(client_id: int, clock: int = 0, state: str = "{}") -> bytes:
    update = var_uint(1) + var_uint(client_id) + var_uint(clock) + var_bytes(state.encode())
    return bytes([MSG_AWARENESS]) + var_bytes(update)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def assert_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"refusing non-loopback target {host!r}: this script only connects to loopback")


# ---------------------------------------------------------------------------------------- /proc


def process_tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        try:
            children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
        except OSError:
            children = []
        pids.extend(int(c) for c in children)
        i += 1
    return pids


def rss_kib(pid: int) -> int | None:
    total, found = 0, False
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = True
        except OSError:
            pass
    return total if found else None


# ---------------------------------------------------------------------------------------- clients


_client_numbers = itertools.count(1)


def client_address(addresses: int) -> str | None:
    """The address the next client claims in X-Forwarded-For (None: no header)."""
    if addresses == 1:
        return None
    n = next(_client_numbers)
    if addresses > 1:
        n = n % addresses + 1
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class IdleClient:
    def __init__(self, url: str, deflate: bool, address: str | None = None) -> None:
        self.url = url
        self.deflate = deflate
        self.address = address
        self.ws: ClientConnection | None = None
        self.synced = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.started = 0.0
        self.sync_seconds: float | None = None
        self.refused: int | None = None  # the HTTP status of a refused upgrade

    async def open(self) -> None:
        self.started = time.monotonic()
        try:
            await self._open()
        except InvalidStatus as exc:
            self.refused = exc.response.status_code
            raise

    async def _open(self) -> None:
        self.ws = await connect(
            self.url,
            additional_headers={"X-Forwarded-For": self.address} if self.address else None,
            compression="deflate" if self.deflate else None,
            max_size=None,
            open_timeout=30,
            ping_interval=None,  # the server pings; the client only answers (as y-websocket does)
            close_timeout=1,
        )
        await self.ws.send(sync_step1_empty())
        await self.ws.send(awareness_update(random.getrandbits(30)))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if not isinstance(message, bytes) or len(message) < 2 or message[0] != MSG_SYNC:
                    continue
                step, _ = read_var_uint(message, 1)
                if step == SYNC_STEP1:
                    await self.ws.send(sync_step2_empty())
                elif step == SYNC_STEP2 and not self.synced.is_set():
                    self.sync_seconds = time.monotonic() - self.started
                    self.synced.set()
        except Exception:
            pass

    @property
    def connected(self) -> bool:
        from websockets.protocol import State

        return self.ws is not None and self.ws.state is State.OPEN

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()  # like ws.terminate(): no closing handshake to wait for
        if self.reader is not None:
            self.reader.cancel()


async def open_room(base: str, room: str, n: int, deflate: bool, timeout: float, addresses: int) -> list[IdleClient]:
    url = f"{base}/{quote(room, safe='')}"
    first = IdleClient(url, deflate, client_address(addresses))
    clients = [first]
    try:
        # The first peer alone creates the room, then the rest join concurrently.
        await asyncio.wait_for(first.open(), timeout)
        await asyncio.wait_for(first.synced.wait(), timeout)
        rest = [IdleClient(url, deflate, client_address(addresses)) for _ in range(n - 1)]
        clients.extend(rest)
        await asyncio.wait_for(asyncio.gather(*(c.open() for c in rest)), timeout)
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in rest)), timeout)
    except Exception:
        pass
    return clients


async def run(args: argparse.Namespace, server_pid: int) -> dict[str, object]:
    base = args.url.rstrip("/")
    run_id = uuid.uuid4().hex[:8]
    rooms = [f"idle-{run_id}-{i}" for i in range((args.conns + args.per_room - 1) // args.per_room)]
    await asyncio.sleep(1.0)
    rss0 = rss_kib(server_pid)
    t0 = time.monotonic()
    sem = asyncio.Semaphore(max(1, args.concurrency // args.per_room))
    lag_at_start = await asyncio.to_thread(scrape_lag, args.metrics) if args.metrics else None

    async def one(i: int, room: str) -> list[IdleClient]:
        async with sem:
            n = min(args.per_room, args.conns - i * args.per_room)
            return await open_room(base, room, n, args.deflate, args.timeout, args.addresses)

    groups = await asyncio.gather(*(one(i, room) for i, room in enumerate(rooms)))
    clients = [c for group in groups for c in group]
    synced = [c for c in clients if c.synced.is_set()]
    establish_s = time.monotonic() - t0
    lag: dict[str, object] = {}
    if args.metrics and lag_at_start is not None:
        await asyncio.sleep(0.2)  # the sample that covers the storm's last turn is taken within 50 ms
        lag.update(await asyncio.to_thread(lag_since, "connect", args.metrics, lag_at_start))
    try:
        await asyncio.sleep(args.hold)
        rss1 = rss_kib(server_pid)
        alive = sum(1 for c in synced if c.connected)
        lag_before = await asyncio.to_thread(scrape_lag, args.metrics) if args.metrics else None
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    if args.metrics and lag_before is not None:
        lag.update(await asyncio.to_thread(leave_lag, args.metrics, lag_before))
    times = sorted(c.sync_seconds for c in synced if c.sync_seconds is not None)
    refused: dict[int, int] = {}
    for c in clients:
        if c.refused is not None:
            refused[c.refused] = refused.get(c.refused, 0) + 1
    result: dict[str, object] = {
        "conns_requested": args.conns,
        "established": len(synced),
        "failed": len(clients) - len(synced),
        "refused_by_status": refused,
        "establish_s": round(establish_s, 2),
        "connect_sync_p50_ms": round(percentile(times, 0.50) * 1000, 1),
        "connect_sync_p99_ms": round(percentile(times, 0.99) * 1000, 1),
        "connect_sync_max_ms": round(times[-1] * 1000, 1) if times else 0.0,
        "still_connected_after_hold": alive,
        "server_rss_before_kib": rss0,
        "server_rss_after_kib": rss1,
        **lag,
    }
    if rss0 is not None and rss1 is not None:
        result["kib_per_conn"] = round((rss1 - rss0) / max(1, len(synced)), 3)
    return result


def leave_lag(http: str, before: dict[str, float], timeout: float = 30.0) -> dict[str, object]:
    """The server's loop lag while every client left at once: wait until it counts no connection (and
    one more lag sample), then the samples since ``before`` per bucket of ``collab_loop_lag_seconds``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(http + "/metrics", timeout=5) as response:
            text = response.read().decode()
        if re.search(r"^collab_connections 0(\.0)?$", text, re.MULTILINE):
            break
        time.sleep(0.25)  # a scrape lists the server's open descriptors: not too often
    time.sleep(0.2)  # the sample that covers the last turn of the leave is taken within 50 ms
    return lag_since("leave", http, before)


def lag_since(phase: str, http: str, before: dict[str, float]) -> dict[str, object]:
    """The server's loop-lag samples since the scrape ``before``: how many, and how many over 10/25/50 ms
    (``collab_loop_lag_seconds``), as ``{phase}_lag_...``."""
    after = scrape_lag(http)
    samples = after["count"] - before["count"]
    over = {b: samples - (after[b] - before[b]) for b in LAG_BOUNDS}
    return {
        f"{phase}_lag_samples": int(samples),
        f"{phase}_lag_over_10ms": int(over["0.01"]),
        f"{phase}_lag_over_25ms": int(over["0.025"]),
        f"{phase}_lag_over_50ms": int(over["0.05"]),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def raise_fd_limit(need: int) -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    except (ImportError, ValueError, OSError):
        pass


def spawn_server(url: str) -> subprocess.Popen[bytes]:
    port = urlsplit(url).port or 80
    cmd = [sys.executable, "-m", "collab_server", "--port", str(port), "--database-url", "memory://"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} at startup: {' '.join(cmd)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start listening within 20 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8822/ws", help="server websocket prefix (loopback only)")
    parser.add_argument("--server-pid", type=int, help="pid of the server whose RSS is measured")
    parser.add_argument("--spawn", action="store_true", help="start collab-server (memory://) on the URL's port")
    parser.add_argument("--conns", type=int, default=3000)
    parser.add_argument("--per-room", type=int, default=10)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold the idle connections")
    parser.add_argument("--concurrency", type=int, default=100, help="connections being opened at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-room connect and sync timeout")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate (the bench's node client does)"
    )
    parser.add_argument(
        "--metrics",
        help="collab-server's http base (http://127.0.0.1:PORT): also report its loop lag while the clients "
        "connect and while they all leave",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument(
        "--addresses",
        type=int,
        default=0,
        help="X-Forwarded-For addresses the clients claim: 0 one each (default), N spread over N, 1 no header",
    )
    args = parser.parse_args()
    assert_loopback(args.url)
    if (args.server_pid is None) == (not args.spawn):
        parser.error("give exactly one of --server-pid and --spawn")
    raise_fd_limit(args.conns + 256)

    proc = spawn_server(args.url) if args.spawn else None
    server_pid = proc.pid if proc is not None else args.server_pid
    # The client's own cyclic collector off: with thousands of sockets open, each of its full collections
    # held this process for 150-340 ms, and every connection in flight then counted that in its connect
    # time. Those pauses were the p99 (clusters of a whole room's clients at the same 166 or 336 ms,
    # against either server); without them the figures are the server's. The run is short, and what
    # cycles it leaves are freed when it exits.
    gc.disable()
    try:
        result = asyncio.run(asyncio.wait_for(run(args, server_pid), args.deadline))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key} {value}")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
