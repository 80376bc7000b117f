"""Who had the CPU while a thread waited for it: a benchmark tool, not product code.

The turn-gaps log (``sitecustomize.py`` here) tells a long turn made of the loop's own work from one
where its thread waited for a CPU; this says who ran meanwhile. Record the scheduler's switches on the
server's core during a bench, then give the text to this script with the loop thread's id (the server's
pid):

    perf record -e sched:sched_switch -C 0 -o /tmp/sched.data -- sleep 30 &
    ...run the bench...
    perf script -i /tmp/sched.data -F comm,tid,cpu,time,event,trace > /tmp/sched.txt
    .venv/bin/python bench/turn_gaps/cpu_takers.py /tmp/sched.txt PID [--over-ms 4]

For every time the thread was switched out and back in after more than ``--over-ms``: when (perf's
clock), how long, the state it left in (R: taken off the CPU while ready to run; S or D: it slept), and
the threads that ran meanwhile with their time. Found this way (session 19): a CRDT worker's first load
(pycrdt's imports, 41 ms) holding a storm's loop (``collab_server/crdt/worker.warm_up``), and the
kernel's own threads (``rcu_preempt``, ``ksoftirqd/0``) in what remained.
"""

from __future__ import annotations

import argparse
import collections
import re

_SWITCH = re.compile(
    r"\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[\d+\]\s+(?P<time>[\d.]+): sched:sched_switch: "
    r"prev_comm=.*? prev_pid=(?P<prev>\d+) prev_prio=\d+ prev_state=(?P<state>\S+) ==> "
    r"next_comm=.*? next_pid=(?P<next>\d+)"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("script", help="perf script output of sched:sched_switch events")
    parser.add_argument("tid", type=int, help="the thread whose waits are explained (the loop's: the pid)")
    parser.add_argument("--over-ms", type=float, default=4.0)
    args = parser.parse_args()
    out_at: float | None = None
    state = ""
    ran: dict[str, float] = collections.defaultdict(float)  # seconds each other thread ran
    last = 0.0
    with open(args.script) as script:
        for line in script:
            switch = _SWITCH.match(line)
            if switch is None:
                continue
            at, prev, following = float(switch["time"]), int(switch["prev"]), int(switch["next"])
            if prev == args.tid:
                out_at, state, last = at, switch["state"], at
                ran.clear()
                continue
            if out_at is None:
                continue
            ran[f"{switch['comm']}:{switch['tid']}"] += at - last
            last = at
            if following == args.tid:
                away = (at - out_at) * 1000
                if away > args.over_ms:
                    who = ", ".join(
                        f"{name} {seconds * 1000:.1f} ms"
                        for name, seconds in sorted(ran.items(), key=lambda item: -item[1])[:4]
                    )
                    print(f"{out_at:.4f} away {away:5.1f} ms, left {state}; ran: {who}")
                out_at = None


if __name__ == "__main__":
    main()
