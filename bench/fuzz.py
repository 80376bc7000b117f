"""Long fuzz run against a real server (issue 8): millions of hostile frames while a real client writes.

    .venv/bin/python bench/fuzz.py [--frames 1000000] [--minutes M] [--clients 42] [--rooms 20] [--hostile]

Starts ``collab-server`` on a fresh SQLite file with ``--workers`` CRDT workers, connects a real Yjs
client (yjs + y-websocket under Node) that appends numbered tokens throughout, and throws fuzzed frames
(tests/support/fuzz.py: valid and mutated updates, odd step1s, awareness, random bytes, and with
``--hostile`` the issue's crash/hang/panic payloads) at ``--rooms`` rooms from ``--clients`` raw
connections. The real client's room gets every kind of frame but updates (see ``fuzz``'s docstring).
Each raw client keeps to its own room(s) and waits for each frame to be handled (a round trip) before
the next: most fuzzed frames are refused, and frames sent behind a refused one are never read, so only
handled frames are fuzz. ``/healthz`` is polled every 100 ms: any answer slower than 1 s counts as outage.
``--minutes`` stops sending after that long even if fewer frames went (the checks still run).

Reported: frames sent and handled, frames/s, connections and close codes, worker restarts, refused
updates by reason, quarantined rows, outage seconds, edits of the real client lost (live and after a
restart), the result of ``collab-server rooms check`` on the database afterwards, and the machine's load
average during the run (a progress line every minute shows it too). Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loop_lag import scrape_lag  # noqa: E402
from tests.support.fuzz import FuzzRun, fuzz  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402
from tests.support.writers import Writer, Writing, lost  # noqa: E402
from tests.support.yjs_clients import YjsNode  # noqa: E402

REASONS = ("malformed", "library_failure", "stalled", "crashed", "poison", "not_loaded", "bad_state_vector")


@dataclass
class SlowProbe:
    at: float  # seconds into the run
    took: float
    error: str = ""


async def _outage(server: ServerProcess, stop: asyncio.Event, started: float, slow: list[SlowProbe]) -> float:
    """Seconds during which /healthz took longer than 1 s (or failed); each such probe goes in ``slow``
    with its time, to be matched with the server's log."""
    down = 0.0
    while not stop.is_set():
        probe_started = time.monotonic()
        error = ""
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(server.http + "/healthz", timeout=5).read())
            took = time.monotonic() - probe_started
        except OSError as exc:
            took, error = 5.0, repr(exc)
        if took > 1.0:
            down += took
            slow.append(SlowProbe(probe_started - started, took, error))
            print(f"[slow /healthz] {time.strftime('%H:%M:%S')} took {took:.1f} s {error}", flush=True)
        await asyncio.sleep(0.1)
    return down


def _loop_lag_tail(server: ServerProcess) -> str:
    """How often the server's event loop ran a timer late by more than 0.1, 0.5 and 1 s."""
    lag = scrape_lag(server.http)
    late = {bound: lag["count"] - lag[bound] for bound in ("0.1", "0.5", "1.0")}
    return (
        f"{lag['count']:.0f} samples; late by > 0.1 s {late['0.1']:.0f}, > 0.5 s {late['0.5']:.0f}, "
        f"> 1 s {late['1.0']:.0f}"
    )


async def _progress(server: ServerProcess, run: FuzzRun, started: float, loads: list[float]) -> None:
    """A line a minute (so that a long run shows how it goes), and the load average every 10 s."""
    tick = 0
    while True:
        await asyncio.sleep(10)
        loads.append(os.getloadavg()[0])
        tick += 1
        if tick % 6 == 0:
            restarts = await asyncio.to_thread(server.metric, "collab_crdt_worker_restarts_total", 0)
            elapsed = time.monotonic() - started
            print(
                f"[{elapsed / 60:4.0f} min] {run.handled} frames handled ({run.handled / elapsed:.0f}/s), "
                f"{run.connections} connections, {restarts:.0f} worker restarts, load avg {loads[-1]:.1f}",
                flush=True,
            )


async def _fresh_text(node: YjsNode, server: ServerProcess, room: str, name: str) -> str:
    client = await node.connect(server.url, room)
    try:
        await client.wait_synced(timeout=30)
        return await client.text(name)
    finally:
        await client.destroy()


async def main(args: argparse.Namespace) -> int:
    servers: list[ServerProcess] = []
    try:
        return await _run(args, servers)
    finally:  # an interrupted run leaves no server or CRDT worker behind
        for server in servers:
            server.stop()


async def _run(args: argparse.Namespace, servers: list[ServerProcess]) -> int:
    directory = Path(tempfile.mkdtemp(prefix="collab-fuzz-"))
    env = {
        "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
        "COLLAB_CRDT_WORKERS": str(args.workers),
        "COLLAB_CRDT_DEADLINE": str(args.deadline),
        "COLLAB_LOG_LEVEL": "warning",
    }
    server = ServerProcess(env=env, log_path=directory / "server.log")
    servers.append(server.start())
    rooms = [f"fuzz-{i}" for i in range(args.rooms)]
    async with YjsNode() as node:
        client = await node.connect(server.url, "real")
        await client.wait_synced()
        writer = Writer(client, "real", rate=args.rate)
        stop = asyncio.Event()
        started = time.monotonic()
        slow: list[SlowProbe] = []
        outage = asyncio.create_task(_outage(server, stop, started, slow))
        run, loads = FuzzRun(), [os.getloadavg()[0]]
        progress = asyncio.create_task(_progress(server, run, started, loads))
        async with Writing([writer]):
            await fuzz(
                server.url,
                [*rooms, "real"],
                frames=args.frames,
                clients=args.clients,
                seed=args.seed,
                hostile=args.hostile,
                read_only=frozenset(["real"]),
                run=run,
                until=started + args.minutes * 60,
            )
        elapsed = time.monotonic() - started
        progress.cancel()
        stop.set()
        down = await outage
        rate = run.handled / elapsed
        print(f"frames        {run.handled} handled ({run.frames} sent) in {elapsed:.0f} s ({rate:.0f}/s)")
        print(f"load avg      {min(loads):.1f}-{max(loads):.1f} (mean {sum(loads) / len(loads):.1f}) during the run")
        print(f"connections   {run.connections}; close codes {dict(sorted(run.close_codes.items()))}")
        print(
            f"outage        {down:.1f} s of /healthz slower than 1 s ({len(slow)} probes; failed: "
            f"{sum(1 for probe in slow if probe.error)})"
        )
        print(f"loop lag      {_loop_lag_tail(server)}")
        print(f"restarts      {server.metric('collab_crdt_worker_restarts_total')}")
        refused = {r: server.metric(f'collab_updates_refused_total{{reason="{r}"}}', 0) for r in REASONS}
        print(f"refused       { ({r: int(n) for r, n in refused.items() if n}) }")
        print(f"quarantined   {server.metric('collab_quarantined_updates_total', 0):.0f} rows")
        print(f"real client   {writer.count} edits, closes {(await client.status())['closeCodes']}")
        text = await _fresh_text(node, server, "real", writer.text_name)
        print(f"lost (live)   {lost([writer], {writer.text_name: text})}")
        await client.destroy()
        started_stop = time.monotonic()
        code = server.stop(timeout=60)  # SIGTERM: every room saved, then exit 0 (-9: killed after 60 s)
        print(f"shutdown      exit {code} in {time.monotonic() - started_stop:.1f} s")
        # What a load would quarantine (--repair moves it), then whether every room loads: a room that
        # cannot be loaded at all is what "unloadable" means; rows set aside are kept in quarantine.
        for args_ in (["--repair"], []):
            check = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "collab_server", "rooms", "check", *args_],
                env={**os.environ, **env},
                cwd=REPO,
                capture_output=True,
                timeout=3600,
            )
            output = check.stdout.decode().strip().splitlines()
            (directory / f"rooms-check{'-repair' if args_ else ''}.txt").write_text("\n".join(output) + "\n")
            summary = [line for line in output if line.startswith(("checked", "quarantine holds"))]
            print(f"rooms check {' '.join(args_) or '        '} exit {check.returncode}: {summary}")
        server = ServerProcess(env=env, log_path=directory / "server-2.log")
        servers.append(server.start())
        text = await _fresh_text(node, server, "real", writer.text_name)
        print(f"lost (stored) {lost([writer], {writer.text_name: text})}")
        server.stop()
    print(f"(database and logs in {directory})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=float, default=math.inf, help="stop sending after this long")
    parser.add_argument("--clients", type=int, default=42, help="raw connections (2 per room by default)")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0, help="edits per second of the real client")
    parser.add_argument("--hostile", action="store_true", help="include the issue's crash/hang/panic payloads")
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
