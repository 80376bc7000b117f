"""Where a process's threads sleep in the kernel, sampled: a benchmark tool, not product code.

A loop turn that the turn-gaps log (``sitecustomize.py`` here) shows as long, without waits for a CPU,
while no Python frame of the loop could be sampled, is the loop's thread blocked in the kernel holding
the GIL. This reads ``/proc/PID/task/TID/stack`` (root only) of every thread of PID about every 0.2 ms
for SECONDS and writes one line per sample of a thread that is sleeping anywhere but in the waits a
server idles in (epoll, a futex of a thread other than the loop's, a pipe read): the wall-clock time, the
thread, its state (D: uninterruptible) and its innermost kernel frames. Match the times with the gaps.

    .venv/bin/python bench/turn_gaps/kernel_stacks.py PID OUT SECONDS

Found this way (session 19): ``synchronize_rcu`` under ``expand_files`` under ``accept4``, the kernel
doubling the descriptor table during a connect storm (``collab_server/fdlimit.py``).
"""

from __future__ import annotations

import argparse
import os
import time

_IDLE = ("do_epoll_wait", "anon_pipe_read")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pid", type=int)
    parser.add_argument("out")
    parser.add_argument("seconds", type=float)
    args = parser.parse_args()
    threads = os.listdir(f"/proc/{args.pid}/task")
    end = time.time() + args.seconds
    samples = 0
    with open(args.out, "w") as out:
        while time.time() < end:
            for tid in threads:
                try:
                    with open(f"/proc/{args.pid}/task/{tid}/stat") as stat:
                        fields = stat.read()
                    state = fields[fields.rindex(")") + 2]
                    if state not in "SD":
                        continue  # running or runnable: nothing to read in the kernel
                    with open(f"/proc/{args.pid}/task/{tid}/stack") as stack:
                        frames = [line.split()[1].split("+")[0] for line in stack.read().splitlines()]
                except (OSError, IndexError):
                    continue  # the thread ended, or the kernel gave no stack
                if not frames or frames[0] in _IDLE or (frames[0] == "futex_do_wait" and tid != str(args.pid)):
                    continue
                out.write(f"{time.time():.4f} {tid} {state} {' < '.join(frames[:6])}\n")
            samples += 1
            time.sleep(0.0002)
    print(f"{samples} rounds of samples")


if __name__ == "__main__":
    main()
