"""Does lowering a session's autogroup keep its work off the server's CPU? Two busy loops pinned to CPU 0.

"server" runs at nice 0 in a session of its own; "renderer" runs in the idle class in another session,
its autogroup left at nice 0 (how Chromium ran before exports.priority lowered its session) or lowered
to 19 (how it runs now). Each pair runs 8 s; the CPU share of each is read from /proc. Alternated
``--rounds`` times. Where the kernel has no autogroups (a container, a systemd service: a cgroup of
their own), both pairs show the idle class working.

    .venv/bin/python bench/exports_sessions.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOP = "while True: pass"
IDLE = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
LOWER = "open('/proc/self/autogroup', 'w').write('19')\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pair(lowered: bool, seconds: float) -> tuple[float, float]:
    """CPU shares of CPU 0 of the server loop and of the renderer loop."""
    renderer_code = IDLE + (LOWER if lowered else "") + LOOP
    procs = [
        subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", code], start_new_session=True)
        for code in (LOOP, renderer_code)
    ]
    try:
        time.sleep(1)
        before, started = [cpu_seconds(p.pid) for p in procs], time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - started
        server, renderer = ((cpu_seconds(p.pid) - b) / wall for p, b in zip(procs, before, strict=True))
        return server, renderer
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
    for round_ in range(args.rounds):
        for lowered in (False, True):
            server, renderer = pair(lowered, args.seconds)
            session = "lowered to 19" if lowered else "left at nice 0"
            print(f"round {round_}, renderer's session {session}: server {server:.0%}, renderer {renderer:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
