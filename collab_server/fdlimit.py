"""The file-descriptor limit: raised at startup, and what it leaves for room sockets.

Every websocket holds a file descriptor. Most systems start a process with a soft limit of 1024 and a
hard limit far above it (524288 or 1048576 on current Linux distributions); an unprivileged process may
raise its own soft limit up to the hard one. Past the soft limit ``accept()`` fails with EMFILE: new
clients hang or are reset, and the store, the CRDT workers' pipes and the log files cannot open anything
either. So the server raises the soft limit to the hard limit when it starts (``raise_fd_limit``), and
caps room sockets below what the limit leaves after ``FD_RESERVE`` descriptors for everything else
(``connection_room``), so that the cap refuses a client cleanly before the kernel does it badly.

It also sizes the kernel's descriptor table for all of them at once (``presize_fd_table``). The table
starts small and doubles as descriptors are opened; in a process with more than one thread, every
doubling waits for an RCU grace period (``expand_files`` → ``synchronize_rcu``), 10-25 ms on a busy
2-core machine, inside the ``accept()`` of the event loop's thread, which holds the GIL there. A connect
storm of 10,000 sockets crossed six doublings and stalled the whole process for each (found by sampling
the loop thread's kernel stack, ``/proc/PID/task/TID/stack``); growing the table once, at start-up, moves
those waits before the first client.
"""

from __future__ import annotations

import logging
import os
import resource

logger = logging.getLogger(__name__)

FD_RESERVE = 256
"""Descriptors kept for what is not a room socket: the store (SQLite files, a PostgreSQL pool), the CRDT
workers' pipes, the broker, log files, REST requests, the export worker's browser."""


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft >= hard:
        logger.info("file-descriptor limit: %d (the hard limit)", soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        # An "unlimited" hard limit cannot be set as the soft one on Linux (nr_open caps it) nor on macOS.
        logger.warning("file-descriptor limit stays at %d: raising it to %s failed: %s", soft, hard, exc)
        return soft
    logger.info("file-descriptor limit raised from %d to %d (the hard limit)", soft, hard)
    return hard


def connection_room(max_connections: int) -> int:
    """``max_connections``, lowered to what the current soft limit leaves for room sockets."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    room = max(1, soft - FD_RESERVE)
    if room >= max_connections:
        return max_connections
    # A little below the setting is what the reserve is for (20,000 under a hard limit of 20,000): said
    # once. Far below it, the limit is a misconfiguration the operator should hear about.
    level = logging.WARNING if room < max_connections // 2 else logging.INFO
    logger.log(
        level,
        "at most %d connections (setting: %d): the file-descriptor limit is %d, %d kept for the rest%s",
        room,
        max_connections,
        soft,
        FD_RESERVE,
        "; raise it (ulimit -n, LimitNOFILE: docs/operations.md)" if level == logging.WARNING else "",
    )
    return room


def presize_fd_table(max_connections: int) -> int | None:
    """Grow the kernel's descriptor table to hold every descriptor the server may use; the highest one.

    Duplicating a descriptor onto the highest number makes the kernel grow the table to cover it, and
    closing it again does not shrink the table. The highest number is the room-socket cap plus the
    reserve, below the soft limit: a hard limit of a million does not make a table of a million (8 MiB).
    None when nothing was done (the number is already open, or the duplication failed).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY:
        top = min(top, soft)
    highest = top - 1
    try:
        os.fstat(highest)
    except OSError:
        pass  # not open: free to take for a moment
    else:
        return None  # open already, so the table covers it (and dup2 would close it)
    try:
        os.dup2(2, highest, inheritable=False)
    except OSError as exc:
        logger.warning("descriptor table not grown to %d at start-up: %s; a connect storm may stall", top, exc)
        return None
    os.close(highest)
    return highest
