"""Lower the CPU priority of the export work's processes, so rendering yields to the realtime path.

In the embedded default the export worker's Chromium runs beside the server's event loop on the same
cores; at a higher nice value (or in the idle class) the kernel gives the loop the CPU first whenever both
want it. Threads and forked processes inherit their creator's priority, so lowering every thread right
after launch (and again when a job opens a page) covers the renderer processes the zygote forks later.

Linux autogroups: where tasks sit in the root CPU cgroup (a plain VM or host, as here; not a container
or a systemd service, which have cgroups of their own), the kernel first shares the CPU between
*sessions* (an autogroup each), and only then between the threads inside one by their nice values and
classes. Playwright starts Chromium in a session of its own, so Chromium's nice 19 and idle class counted
only against Chromium's own threads, and its session took as much CPU as the server's: measured, a busy
loop in the idle class in another session halved fan-out. So the autogroup of every Chromium session is
lowered too (``/proc/PID/autogroup``), never the server's own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def descendants(root: int) -> list[int]:
    """Pids of every process below ``root`` (read from /proc; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            children.setdefault(int(text[text.rindex(")") + 2 :].split()[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def lower_chromium_priority(niceness: int, root: int | None = None) -> int:
    """Lower every thread of the Chromium processes below ``root`` (default: this process), and of
    Playwright's driver (it relays every byte of the pages' results), to nice ``niceness``; at 19 also to
    the SCHED_IDLE class. Returns how many threads were changed. Best effort: a thread may exit meanwhile.

    Per thread, because Linux applies both to one thread (a pid is its main thread): Chromium's GPU and
    raster threads already running would keep full priority, and a dozen of them at nice 10 still weigh
    as much as the server's loop at nice 0. SCHED_IDLE (weight 3 against the loop's 1024) runs only on CPU
    time nothing else wants."""
    changed = 0
    idle = niceness >= 19 and hasattr(os, "SCHED_IDLE")
    for pid in descendants(os.getpid() if root is None else root):
        with contextlib.suppress(OSError):
            is_chromium = Path(f"/proc/{pid}/comm").read_text().startswith("chrom")
            if not is_chromium and b"playwright" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if is_chromium:
                lower_autogroup(pid, niceness)
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    tid = int(task.name)
                    if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                        os.setpriority(os.PRIO_PROCESS, tid, niceness)
                        changed += 1
                    if idle and os.sched_getscheduler(tid) != os.SCHED_IDLE:
                        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    return changed


def autogroup(pid: int) -> tuple[str, int] | None:
    """The autogroup of ``pid`` and its nice value (``/autogroup-12 nice 0``), or None where there are none."""
    try:
        name, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
        return name, int(nice)
    except (OSError, ValueError):
        return None


def lower_autogroup(pid: int, niceness: int) -> bool:
    """Lower the autogroup (session) of ``pid`` to nice ``niceness`` unless it is this process's own.
    Returns whether it was changed."""
    theirs, ours = autogroup(pid), autogroup(os.getpid())
    if theirs is None or theirs[0] == (ours[0] if ours else None) or theirs[1] >= niceness:
        return False
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(min(niceness, 19)))
    except OSError:
        return False
    return True
