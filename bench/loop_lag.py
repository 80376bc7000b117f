"""Our server's event-loop lag and CPU per scenario, from a side-by-side run of bench/compare.sh.

    .venv/bin/python bench/loop_lag.py RESULTS_DIR     # e.g. $YJS_BENCH/results/2026-11-28/120000

The harness stops every server with SIGTERM after each scenario; ours then logs the lag of its event loop
over the run (``collab_server.looplag``: one sample every 50 ms, how many were over 10 ms, the worst; and the
same for the lag less the loop thread's waits for a CPU, which the workers cause when they share its core) and
its CPU seconds split between the networking process and its children (CRDT workers). The harness itself
counts the CPU of the networking process only.
"""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

_LAG = re.compile(r"event loop lag: (\d+) samples, (\d+) over 10 ms, worst ([\d.]+) ms")
_RUNNING = re.compile(r"less waits for a CPU: (\d+) over 10 ms, worst ([\d.]+) ms")
_CPU = re.compile(r"CPU seconds: this process ([\d.]+), child processes ([\d.]+)")


# The bounds of collab_loop_lag_seconds's buckets that the readers below report on, in seconds.
LAG_BOUNDS = ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5")


def scrape_lag(http: str) -> dict[str, float]:
    """A running server's ``collab_loop_lag_seconds``: the count of samples at or under each bound of
    ``LAG_BOUNDS``, and ``"count"``, all from one scrape of ``{http}/metrics``. One scrape, since samples
    arrive 20 times a second: buckets read one scrape each would come from different moments."""
    with urllib.request.urlopen(http + "/metrics", timeout=5) as response:
        values = dict(line.rsplit(" ", 1) for line in response.read().decode().splitlines() if line[:1] != "#")
    lag = {bound: float(values[f'collab_loop_lag_seconds_bucket{{le="{bound}"}}']) for bound in LAG_BOUNDS}
    lag["count"] = float(values["collab_loop_lag_seconds_count"])
    return lag


def summarise_line(text: str) -> tuple[int, int, float] | None:
    """(samples, samples over 10 ms, worst ms) from a server log, or None. A log that several servers
    wrote in turn (bench/large_document.py restarts its server) gives the last one's."""
    found = _LAG.findall(text)
    return None if not found else (int(found[-1][0]), int(found[-1][1]), float(found[-1][2]))


def summarise(log: Path) -> str | None:
    text = log.read_text(errors="replace")
    cpus = _CPU.findall(text)
    lag, cpu = summarise_line(text), cpus[-1] if cpus else None
    if lag is None:
        return None
    summary = f"lag samples {lag[0]}, over 10 ms {lag[1]}, worst {lag[2]:.1f} ms"
    running = _RUNNING.findall(text)
    if running:
        summary += f" (less waits for a CPU: over 10 ms {running[-1][0]}, worst {float(running[-1][1]):.1f} ms)"
    if cpu is not None:
        summary += f"; CPU s: networking {cpu[0]}, workers {cpu[1]}"
    return summary


def main() -> None:
    root = Path(sys.argv[1])
    for log in sorted(root.glob("run*/*/server-*.log")):
        summary = summarise(log)
        if summary is not None:
            run, server, scenario = log.parts[-3], log.parts[-2], log.stem.removeprefix("server-")
            print(f"{run} {server:14} {scenario:12} {summary}")


if __name__ == "__main__":
    main()
