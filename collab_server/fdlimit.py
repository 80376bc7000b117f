"""The file-descriptor limit: raised at startup, and what it leaves for room sockets.

Every websocket holds a file descriptor. Most systems start a process with a soft limit of 1024 and a
hard limit far above it (524288 or 1048576 on current Linux distributions); an unprivileged process may
raise its own soft limit up to the hard one. Past the soft limit ``accept()`` fails with EMFILE: new
clients hang or are reset, and the store, the CRDT workers' pipes and the log files cannot open anything
either. So the server raises the soft limit to the hard limit when it starts (``raise_fd_limit``), and
caps room sockets below what the limit leaves after ``FD_RESERVE`` descriptors for everything else
(``connection_room``), so that the cap refuses a client cleanly before the kernel does it badly.
"""

from __future__ import annotations

import logging
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
