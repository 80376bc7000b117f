"""The event loop's lag per scenario, from a side-by-side run of bench/compare.sh.

    .venv/bin/python bench/loop_lag.py RESULTS_DIR     # e.g. /tmp/yjs-bench/results/2026-11-28/120000

For every server log of ours (``bench/serve_for_bench.sh`` appends the metrics at exit), prints the
samples of ``collab_loop_lag_seconds`` (one every 50 ms), how many were over 10 ms and over 100 ms, and
the compactions and worker restarts of that scenario.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_BUCKET = re.compile(r'^collab_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$')
_VALUE = re.compile(r"^(collab_\w+?)(?:\{[^}]*\})? (\S+)$")


def summarise(log: Path) -> str | None:
    text = log.read_text(errors="replace")
    if "== bench metrics at exit" not in text:
        return None
    block = text.split("== bench metrics at exit", 1)[1].split("== end of bench metrics", 1)[0]
    buckets: dict[float, float] = {}
    totals: dict[str, float] = {}
    for line in block.splitlines():
        if match := _BUCKET.match(line):
            buckets[float(match[1])] = float(match[2])
        elif match := _VALUE.match(line):
            totals[match[1]] = totals.get(match[1], 0.0) + float(match[2])
    count = buckets.get(float("inf"), 0.0)
    within = {bound: value for bound, value in buckets.items()}
    over_10 = count - within.get(0.01, count)
    over_100 = count - within.get(0.1, count)
    return (
        f"lag samples {count:.0f}, over 10 ms {over_10:.0f}, over 100 ms {over_100:.0f}; "
        f"compactions {totals.get('collab_compactions_total', 0):.0f}, "
        f"worker restarts {totals.get('collab_crdt_worker_restarts_total', 0):.0f}, "
        f"slowed {totals.get('collab_peer_slowed_seconds_total', 0):.1f} s"
    )


def main() -> None:
    root = Path(sys.argv[1])
    for log in sorted(root.glob("run*/*/server-*.log")):
        summary = summarise(log)
        if summary is not None:
            run, server, scenario = log.parts[-3], log.parts[-2], log.stem.removeprefix("server-")
            print(f"{run} {server:14} {scenario:12} {summary}")


if __name__ == "__main__":
    main()
