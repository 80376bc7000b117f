"""Fan-out with PostgreSQL on, against the in-memory store; and the append latency under that load.

For each store and run, a fresh server process (pinned to CPU 0) takes the shared harness's ``fanout``
scenario (``../shared/yjs-bench``, 1 writer -> 50 readers, client pinned to CPU 1). Afterwards the
server's ``/metrics`` give the group commit's latency, from an update's arrival to its commit
(``collab_store_commit_seconds``, quantiles interpolated inside the histogram's buckets as Prometheus'
``histogram_quantile`` does), and the batch sizes. PostgreSQL is not pinned: its CPU time during the run
is reported, because on two cores it competes with the server and the client.

    .venv/bin/python bench/store_fanout.py                   # 2 runs per store, alternating
    .venv/bin/python bench/store_fanout.py --runs 1 --bench-args "--updates 2000 --reps 2"

Each PostgreSQL run gets a database of its own on COLLAB_BENCH_POSTGRES_URL (default: the local
trust-auth server), dropped afterwards. Loopback only; the script stops its server by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("YJS_BENCH", REPO.parent / "shared" / "yjs-bench"))
ADMIN_URL = os.environ.get("COLLAB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- PostgreSQL ------------------------------------------------------------------------------------


def admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def postgres_cpu_seconds() -> float:
    """CPU time of every process called ``postgres`` (the server and its backends), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if comm.startswith("postgres"):
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def machine_busy_percent(seconds: float = 1.0) -> float:
    """CPU used machine-wide over ``seconds`` (our server idle then), in % of one core: foreign load."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        return busy, busy + fields[3] + fields[4]

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return 100 * (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)


def process_cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- metrics ---------------------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    samples: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
    return samples


def _buckets(samples: dict[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of histogram ``name``, in order."""
    return sorted(
        (float(key.split('le="')[1].rstrip('"}')), count)
        for key, count in samples.items()
        if key.startswith(name + "_bucket{")
    )


def histogram_quantile(samples: dict[str, float], name: str, q: float) -> float | None:
    """Prometheus' histogram_quantile over ``name``'s buckets (linear inside the bucket)."""
    buckets = _buckets(samples, name)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return None


def bucket_of(samples: dict[str, float], name: str, q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q``: a guaranteed ceiling, unlike the interpolation."""
    buckets = _buckets(samples, name)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= rank)


# -- one run ---------------------------------------------------------------------------------------


def run_once(store: str, bench_args: list[str], out_dir: Path, wait_quiet: float) -> dict[str, float | str | None]:
    port = free_port()
    database = None
    if store == "postgres":
        database = f"collab_bench_{uuid.uuid4().hex[:10]}"
        admin(f'CREATE DATABASE "{database}"')
        url = urlsplit(ADMIN_URL)._replace(path=f"/{database}").geturl()
    else:
        url = "memory://"
    log = open(out_dir / f"server-{store}-{port}.log", "wb")
    server = subprocess.Popen(
        ["taskset", "-c", "0", str(REPO / ".venv/bin/collab-server"), "--port", str(port), "--database-url", url,
         "--auth", "off"],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"server did not start; see {log.name}") from None
                time.sleep(0.1)
        quiet_deadline = time.monotonic() + wait_quiet
        while (background := machine_busy_percent()) > 15 and time.monotonic() < quiet_deadline:
            time.sleep(3)
        result_json = out_dir / f"fanout-{store}-{port}.json"
        pg_before, server_before = postgres_cpu_seconds(), process_cpu_seconds(server.pid)
        started = time.monotonic()
        subprocess.run(
            [
                "taskset", "-c", "1", "node", str(HARNESS / "bench.mjs"),
                "--url", f"ws://127.0.0.1:{port}/ws", "--client", "ywebsocket", "--scenario", "fanout",
                "--server-pid", str(server.pid), "--json", str(result_json), *bench_args,
            ],
            check=True,
            cwd=HARNESS,
            stdout=subprocess.DEVNULL,
            timeout=300,
        )  # fmt: skip
        wall = time.monotonic() - started
        pg_cpu, server_cpu = postgres_cpu_seconds() - pg_before, process_cpu_seconds(server.pid) - server_before
        samples = scrape(port)
        metrics = json.loads(result_json.read_text())["metrics"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        if database is not None:
            admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    commit = "collab_store_commit_seconds"
    batches = samples.get("collab_store_batch_updates_count", 0.0)
    p50, p99 = histogram_quantile(samples, commit, 0.5), histogram_quantile(samples, commit, 0.99)
    return {
        "store": store,
        "background_cpu_pct": background,
        "throughput": metrics.get("throughput_updates_per_s"),
        "lat_p50": metrics.get("lat_p50_ms"),
        "lat_p99": metrics.get("lat_p99_ms"),
        "paced_p99": metrics.get("paced_lat_p99_ms"),
        "commits": samples.get(commit + "_count"),
        "commit_p50_ms": None if p50 is None else p50 * 1000,
        "commit_p99_ms": None if p99 is None else p99 * 1000,
        "commit_p99_bucket_ms": None if (b := bucket_of(samples, commit, 0.99)) is None else b * 1000,
        "commit_mean_ms": (
            samples[commit + "_sum"] / samples[commit + "_count"] * 1000 if samples.get(commit + "_count") else None
        ),
        "batches": batches,
        "mean_batch": samples.get("collab_store_batch_updates_sum", 0.0) / batches if batches else None,
        "server_cpu_pct": 100 * server_cpu / wall,
        "postgres_cpu_pct": 100 * pg_cpu / wall,
    }


def fmt(value: float | str | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs per store (alternating memory/postgres)")
    parser.add_argument("--bench-args", default="", help="extra arguments for bench.mjs fanout")
    parser.add_argument(
        "--wait-quiet", type=float, default=60, help="seconds to wait for foreign CPU load < 15%% before a run"
    )
    args = parser.parse_args()
    if not (HARNESS / "node_modules").is_dir():
        print(f"{HARNESS}: run setup.sh there first", file=sys.stderr)
        return 2
    out_dir = Path(tempfile.mkdtemp(prefix="store-fanout-"))
    results: list[dict[str, float | str | None]] = []
    for run in range(args.runs):
        for store in ("memory", "postgres") if run % 2 == 0 else ("postgres", "memory"):
            result = run_once(store, args.bench_args.split(), out_dir, args.wait_quiet)
            results.append(result)
            print(json.dumps(result), flush=True)
    rows = [
        ("foreign CPU load before the run, % of a core", "background_cpu_pct", 0),
        ("fan-out throughput, updates/s to all 50 readers", "throughput", 0),
        ("delivery latency p50, ms (saturated)", "lat_p50", 1),
        ("delivery latency p99, ms (saturated)", "lat_p99", 1),
        ("delivery latency p99, ms (paced phase)", "paced_p99", 1),
        ("updates committed", "commits", 0),
        ("append latency arrival->commit p50, ms", "commit_p50_ms", 1),
        ("append latency arrival->commit p99, ms", "commit_p99_ms", 1),
        ("... p99 bucket ceiling, ms", "commit_p99_bucket_ms", 1),
        ("append latency mean, ms", "commit_mean_ms", 1),
        ("group commits (transactions)", "batches", 0),
        ("updates per commit, mean", "mean_batch", 1),
        ("server CPU, % of a core", "server_cpu_pct", 0),
        ("PostgreSQL CPU, % of a core", "postgres_cpu_pct", 0),
    ]
    columns = [f"{r['store']} #{i // 2 + 1}" for i, r in enumerate(results)]
    print("\n| metric | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, key, digits in rows:
        print(f"| {label} | " + " | ".join(fmt(r[key], digits) for r in results) + " |")
    by_store: dict[str, list[float]] = {}
    for r in results:
        if isinstance(r["throughput"], float | int):
            by_store.setdefault(str(r["store"]), []).append(float(r["throughput"]))
    if "memory" in by_store and "postgres" in by_store:
        ratio = statistics.median(by_store["postgres"]) / statistics.median(by_store["memory"])
        print(f"\npostgres / memory fan-out throughput (medians): {ratio:.2f}x")
    print(f"results: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
