"""The connection caps' bookkeeping (collab_server.admission); the refusals on the wire are in
tests/e2e/test_connection_limits.py."""

from __future__ import annotations

import os
import re
import resource
import sys
from pathlib import Path

import pytest

from collab_server.admission import Admission
from collab_server.fdlimit import FD_RESERVE, connection_room, presize_fd_table, raise_fd_limit


def caps(**overrides: int) -> Admission:
    limits = {"max_connections": 100, "max_pending": 100, "max_per_address": 100, "max_rooms_per_address": 100}
    return Admission(**{**limits, **overrides})


def test_the_replica_cap_refuses_the_next_socket_with_503_until_one_leaves() -> None:
    admission = caps(max_connections=2)
    assert admission.admit("a", "r") is None
    assert admission.admit("b", "r") is None
    refused = admission.admit("c", "r")
    assert refused is not None
    assert (refused.status, refused.reason) == (503, "replica_full")
    admission.release("a", "r", pending=True)
    assert admission.admit("c", "r") is None


def test_sockets_count_as_pending_until_they_join() -> None:
    admission = caps(max_pending=2)
    assert admission.admit("a", "r") is None
    assert admission.admit("a", "r") is None
    refused = admission.admit("a", "s")
    assert refused is not None and refused.reason == "pending_full"
    admission.joined()
    assert admission.admit("a", "s") is None
    assert (admission.open, admission.pending) == (3, 2)


def test_one_address_is_capped_and_others_are_not() -> None:
    admission = caps(max_per_address=2)
    assert admission.admit("a", "r") is None
    assert admission.admit("a", "s") is None
    refused = admission.admit("a", "t")
    assert refused is not None
    assert (refused.status, refused.reason) == (429, "address_connections")
    assert admission.admit("b", "t") is None


def test_rooms_per_address_counts_distinct_rooms_held_at_once() -> None:
    admission = caps(max_rooms_per_address=2)
    assert admission.admit("a", "r") is None
    assert admission.admit("a", "s") is None
    assert admission.admit("a", "r") is None  # a room it holds already
    refused = admission.admit("a", "t")
    assert refused is not None and refused.reason == "address_rooms"
    admission.release("a", "r", pending=True)
    assert admission.admit("a", "t") is not None  # "r" is still held by its other socket
    admission.release("a", "r", pending=True)
    assert admission.admit("a", "t") is None


def test_an_address_with_no_sockets_left_is_forgotten() -> None:
    admission = caps()
    for room in ("r", "s"):
        assert admission.admit("a", room) is None
    admission.joined()
    admission.release("a", "r", pending=False)
    admission.release("a", "s", pending=True)
    assert (admission.open, admission.pending, admission.addresses()) == (0, 0, 0)


def test_the_file_descriptor_limit_is_raised_to_the_hard_limit_and_bounds_connections() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        _, hard = before
        if hard == resource.RLIM_INFINITY:
            pytest.skip("an unlimited hard limit cannot be the soft one")
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
        assert connection_room(1_000_000) == min(hard, 1024) - FD_RESERVE
        assert connection_room(10) == 10
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def descriptor_table_size() -> int:
    """The kernel's descriptor table size of this process (Linux's /proc/self/status FDSize)."""
    found = re.search(r"^FDSize:\s+(\d+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert found is not None
    return int(found.group(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FDSize is Linux's")
def test_the_descriptor_table_is_grown_at_once_for_every_connection() -> None:
    target = descriptor_table_size() * 4
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < target:
        pytest.skip("the soft limit is below the table size this test grows to")
    highest = presize_fd_table(target - FD_RESERVE)
    assert highest == target - 1
    assert descriptor_table_size() >= target
    with pytest.raises(OSError):
        os.fstat(highest)  # the descriptor that grew it was closed again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FDSize is Linux's")
def test_growing_the_descriptor_table_never_closes_an_open_descriptor() -> None:
    read, write = os.pipe()
    high = os.dup2(write, descriptor_table_size() * 2)
    try:
        assert presize_fd_table(high + 1 - FD_RESERVE) is None
        os.write(high, b"still open")
        assert os.read(read, 10) == b"still open"
    finally:
        for fd in (read, write, high):
            os.close(fd)


def test_an_address_moving_between_rooms_is_counted_exactly() -> None:
    admission = caps(max_rooms_per_address=2)
    for room in ("r", "r", "s", "s"):
        assert admission.admit("a", room) is None
    assert admission.admit("a", "t") is not None
    for room in ("s", "s"):  # back to one room, two sockets in it
        admission.release("a", room, pending=True)
    assert admission.admit("a", "t") is None
    assert admission.admit("a", "u") is not None
    for room in ("r", "r", "t"):
        admission.release("a", room, pending=True)
    assert (admission.open, admission.addresses()) == (0, 0)
