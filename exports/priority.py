"""Lower the CPU priority of the export work's processes, so rendering yields to the realtime path.

In the embedded default the export worker's Chromium runs beside the server's event loop on the same
cores; at a higher nice value the kernel gives the loop the CPU first whenever both want it. Chromium
forks its renderer processes from a zygote, and a forked process inherits its parent's nice value, so
lowering the browser's processes right after launch (and again when a job opens a page) covers all.
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
    """Set nice ``niceness`` on every Chromium process below ``root`` (default: this process), and on
    Playwright's driver (it relays every byte of the pages' results), where they run at a higher priority;
    returns how many were changed. Best effort: a process may exit meanwhile."""
    changed = 0
    for pid in descendants(os.getpid() if root is None else root):
        with contextlib.suppress(OSError):
            is_chromium = Path(f"/proc/{pid}/comm").read_text().startswith("chrom")
            if not is_chromium and b"playwright" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
                os.setpriority(os.PRIO_PROCESS, pid, niceness)
                changed += 1
    return changed
