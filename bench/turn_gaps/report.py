"""Summarise a ``COLLAB_TURN_GAPS_LOG`` file (see ``sitecustomize.py`` here): the long turns in each burst.

    .venv/bin/python bench/turn_gaps/report.py /tmp/gaps.log [--quiet 1.5]

Gaps closer together than ``--quiet`` seconds form one burst (a connect storm, then the leave); for each:
its start, how many gaps were over 10 and over 25 ms, the worst, and the same counts with the thread's
waits for a CPU taken out (the loop's own work).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--quiet", type=float, default=1.5, help="seconds without a long turn between bursts")
    args = parser.parse_args()
    gaps = []
    with open(args.log) as log:
        for line in log:
            at, gap, waited = (float(field) for field in line.split())
            gaps.append((at, gap, waited))
    bursts: list[list[tuple[float, float, float]]] = []
    for gap in gaps:
        if not bursts or gap[0] - bursts[-1][-1][0] > args.quiet:
            bursts.append([])
        bursts[-1].append(gap)
    print("| burst at | turns over 10 ms | over 25 ms | worst, ms | less CPU waits: over 10 ms | worst, ms |")
    print("|---|---|---|---|---|---|")
    for burst in bursts:
        own = [gap - waited for _, gap, waited in burst]
        every = [gap for _, gap, _ in burst]
        print(
            f"| {time.strftime('%H:%M:%S', time.localtime(burst[0][0]))} | {sum(g > 10 for g in every)} "
            f"| {sum(g > 25 for g in every)} | {max(every):.1f} | {sum(g > 10 for g in own)} | {max(own):.1f} |"
        )


if __name__ == "__main__":
    main()
