"""Does an in-process export worker slow the realtime path? Fan-out with the worker idle vs rendering.

The embedded default: one server process (SQLite, in-process export worker) pinned to CPU 0, the shared
harness's ``fanout`` scenario (1 writer -> 50 readers) pinned to CPU 1. In "rendering" runs a loop keeps
one PNG export of a 200-shape board (drawn by tldraw) in the queue for the whole scenario. Chromium is a
child of the server and inherits its pinning, so it competes with the event loop for CPU 0: the worst
case for the claim. "apart" runs the same load with the worker as its own process (``collab-server
worker``, COLLAB_EXPORT_WORKER=off) on the same core: what is left is contention for the core, not the
worker's work on the server's event loop. "burner" is the control: no export at all, but a busy loop in the
idle scheduling class on the server's core: what any work beside the server costs, however low its
priority (caches, memory bandwidth, and the wake-up of a preempted loop); "burner-session" is the same loop
in the idle class only, its session's autogroup left at nice 0 (how Chromium ran before exports.priority
lowered its session). In every mode a client polls the
server's export API 20 times a second, as the rendering modes' client polls its job. Runs alternate
between the modes.

``--baseline DIR`` also runs every mode with the servers from another checkout (PYTHONPATH=DIR; its
renderer page built in DIR/exports/renderer/web/dist), alternating with this one: a same-run baseline.

    .venv/bin/python bench/exports_fanout.py --runs 2 --bench-args "--updates 2000 --reps 2"

Loopback only; the script stops its server by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HARNESS = Path(os.environ.get("YJS_BENCH", REPO.parent / "shared" / "yjs-bench"))

from bench.store_fanout import free_port, machine_busy_percent, process_cpu_seconds  # noqa: E402
from exports.browser import BrowserRenderer  # noqa: E402
from exports.priority import descendants  # noqa: E402
from persistence.sqlite import SQLiteStore  # noqa: E402
from tests.support.boards import board_update  # noqa: E402

ROOM = "bench-board"


async def prepare(database: Path) -> None:
    renderer = BrowserRenderer(niceness=0)  # draws the board, before any measurement
    try:
        data = await renderer.run_page("(n) => window.collabSampleBoard(n)", 200)
    finally:
        await renderer.close()
    store = await SQLiteStore(database).open()
    await store.append_many([(ROOM, board_update(ROOM, data["records"], data["schema"]))])
    await store.close()


def _post(port: int, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def keep_rendering(port: int, stop: threading.Event, done: list[float], render: bool = True) -> None:
    """One PNG export at a time, back to back, until ``stop``; appends each one's seconds to ``done``.
    Without ``render``, only the polling (the same requests, no export)."""
    while not render and not stop.is_set():
        _post(port, f"/api/rooms/{ROOM}/exports")
        time.sleep(0.05)
    while not stop.is_set():
        started = time.monotonic()
        job = _post(port, f"/api/rooms/{ROOM}/exports", {"format": "png"})
        while not stop.is_set():
            status = _post(port, f"/api/exports/{job['id']}")
            if status["status"] in ("completed", "failed"):
                done.append(time.monotonic() - started)
                break
            time.sleep(0.05)


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of every process below ``root`` (Chromium, Playwright's driver, decode children)."""
    total = 0.0
    for pid in descendants(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += process_cpu_seconds(pid)
    return total


# in its own session, like Chromium, and lowered like it: the idle class, and its autogroup at nice 19
BURNER = (
    "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "open('/proc/self/autogroup', 'w').write('19')\nwhile True: pass"
)
# "burner-session": the idle class only, as Chromium was before its session was lowered (exports.priority)
BURNER_SESSION = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass"


def drop_unfinished_jobs(database: Path) -> None:
    """The last run's export (still in the queue when its server stopped) must not render in this one."""
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        with contextlib.suppress(sqlite3.OperationalError):  # no exports table before the first server
            db.execute("DELETE FROM exports WHERE status IN ('pending', 'processing')")


def run_once(mode: str, database: Path, bench_args: list[str], out_dir: Path, code: Path | None) -> dict[str, Any]:
    drop_unfinished_jobs(database)
    port = free_port()
    log = open(out_dir / f"server-{mode}-{port}.log", "wb")
    env = {
        **os.environ,
        **({"PYTHONPATH": str(code)} if code else {}),
        "COLLAB_DATABASE_URL": f"sqlite:///{database}",
        "COLLAB_BLOB_URL": f"file://{out_dir}/blobs",
        "COLLAB_EXPORT_POLL_INTERVAL": "0.2",
    }
    if mode == "apart":  # the worker as its own process, on the same core as the server
        env["COLLAB_EXPORT_WORKER"] = "off"
    server = subprocess.Popen(
        ["taskset", "-c", "0", str(REPO / ".venv/bin/collab-server"), "--port", str(port)],
        stdout=log,
        stderr=log,
        start_new_session=True,
        env=env,
        cwd=code or REPO,  # python -m children (decode) import from the working directory first
    )
    worker = None
    if mode == "apart":
        worker = subprocess.Popen(
            ["taskset", "-c", "0", str(REPO / ".venv/bin/collab-server"), "worker"],
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=env,
            cwd=code or REPO,
        )
    if mode in ("burner", "burner-session"):
        burner = BURNER if mode == "burner" else BURNER_SESSION
        worker = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", burner], start_new_session=True)
    stop, renders = threading.Event(), list[float]()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {log.name}") from None
                time.sleep(0.1)
        background = machine_busy_percent()
        rendering = mode in ("rendering", "apart")
        loader = threading.Thread(target=keep_rendering, args=(port, stop, renders, rendering), daemon=True)
        loader.start()
        warming = time.monotonic() + 90
        while rendering and not renders and time.monotonic() < warming:  # measure once Chromium is warm
            time.sleep(0.2)  # (at idle priority on a saturated machine it may not be: measure it busy anyway)
        beside = worker.pid if worker is not None and mode == "apart" else server.pid
        beside_cpu = tree_cpu_seconds(beside) + (process_cpu_seconds(beside) if mode == "apart" else 0)
        result_json = out_dir / f"fanout-{mode}-{port}.json"
        cpu_before, started = process_cpu_seconds(server.pid), time.monotonic()
        subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "node",
                str(HARNESS / "bench.mjs"),
                "--url",
                f"ws://127.0.0.1:{port}/ws",
                "--client",
                "ywebsocket",
                "--scenario",
                "fanout",
                "--server-pid",
                str(server.pid),
                "--json",
                str(result_json),
                *bench_args,
            ],
            check=True,
            cwd=HARNESS,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        wall = time.monotonic() - started
        server_cpu = process_cpu_seconds(server.pid) - cpu_before
        beside_cpu = tree_cpu_seconds(beside) + (process_cpu_seconds(beside) if mode == "apart" else 0) - beside_cpu
        rendered_during = max(0, len(renders) - 1) if renders else 0
        stop.set()
        if loader.is_alive():
            loader.join(60)
        metrics = json.loads(result_json.read_text())["metrics"]
    finally:
        stop.set()
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    return {
        "mode": mode,
        "background_cpu_pct": round(background),
        "throughput": metrics.get("throughput_updates_per_s"),
        "lat_p50": metrics.get("lat_p50_ms"),
        "lat_p99": metrics.get("lat_p99_ms"),
        "paced_p99": metrics.get("paced_lat_p99_ms"),
        "server_cpu_pct": round(100 * server_cpu / wall),
        "export_cpu_pct": round(100 * beside_cpu / wall),
        "png_s_median": round(statistics.median(renders[1:]), 2) if len(renders) > 1 else None,
        "pngs_rendered_during": rendered_during,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs per mode (alternating)")
    parser.add_argument(
        "--modes",
        default="idle,rendering,apart",
        help="idle; rendering (in-process worker); apart (collab-server worker beside it); "
        "burner, burner-session (controls)",
    )
    parser.add_argument("--bench-args", default="", help="extra arguments for bench.mjs fanout")
    parser.add_argument("--baseline", type=Path, help="another checkout to run every mode with as well")
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="exports-fanout-"))
    database = out_dir / "collab.sqlite3"
    asyncio.run(prepare(database))
    results = []
    codes = [None, args.baseline.resolve()] if args.baseline else [None]
    for _ in range(args.runs):
        for mode in args.modes.split(","):
            for code in codes if mode in ("rendering", "apart") else [None]:  # no export: the same code
                result = run_once(mode, database, args.bench_args.split(), out_dir, code)
                results.append({"code": "baseline" if code else "branch", **result})
                print(json.dumps(results[-1]), flush=True)
    print(f"\nresults and logs in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
