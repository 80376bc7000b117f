"""Memory the C allocator keeps after Python frees it.

glibc keeps freed blocks for reuse instead of returning them to the system, so a process that once held
a board's tens of MiB of transient buffers (a request, an answer, a message) stays that large.
``release_free_memory`` hands the free pages back: the CRDT workers call it after a large request or
answer, the server's worker pool after a large answer (in a thread: it takes ~20 ms per 100 MiB of free
blocks).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import cast

# A request, answer or message this large (a board's load, fold or sync) leaves tens of MiB of freed
# buffers behind: worth the ~2 ms a release costs when there is nothing to give back.
RELEASE_AFTER_BYTES = 8 * 1024 * 1024


def release_free_memory() -> None:
    """Give the C allocator's free memory back to the system (glibc ``malloc_trim``). After a 54 MiB board
    was written, its worker's freed request and answer buffers stayed resident: 559 MiB against 291 MiB for
    the same board loaded fresh. Elsewhere (not glibc) this does nothing."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return cast(Callable[[int], int], ctypes.CDLL(None).malloc_trim)
    except AttributeError:  # a C library without it (musl)
        return None


_malloc_trim = _find_malloc_trim()
