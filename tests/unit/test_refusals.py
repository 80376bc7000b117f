"""Refusal logging cannot flood: a handful of lines per reason per interval, and a count of the rest."""

from __future__ import annotations

import logging

import pytest

from collab_server.native_stderr import NativeReport
from collab_server.refusals import LogLimiter, RateLimitFilter


def test_each_reason_logs_a_burst_per_interval_then_says_how_many_were_left_out() -> None:
    limiter = LogLimiter(burst=3, interval=10)
    assert [limiter.allow("nan", now=0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow("deep", now=1.0) == 0  # reasons are counted apart
    assert limiter.allow("nan", now=10.0) == 2


PANIC = [
    "",
    "thread '<unnamed>' (8912) panicked at /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/"
    "yrs-0.28.0/src/store.rs:234:50:",
    "called `Option::unwrap()` on a `None` value",
    "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
]


def test_a_panic_report_becomes_one_record_without_build_paths(caplog: pytest.LogCaptureFixture) -> None:
    report = NativeReport(LogLimiter(burst=2, interval=60))
    with caplog.at_level(logging.ERROR, logger="collab_server.native"):
        for _ in range(5):
            for line in PANIC:
                report.line(line)
    assert [record.getMessage() for record in caplog.records] == [
        "the CRDT library panicked: called `Option::unwrap()` on a `None` value (at yrs-0.28.0/src/store.rs:234:50)"
    ] * 2
    assert "/root" not in caplog.text


def test_a_python_traceback_becomes_one_record_naming_the_error(caplog: pytest.LogCaptureFixture) -> None:
    report = NativeReport(LogLimiter(burst=1, interval=60), source="CRDT worker 3")
    with caplog.at_level(logging.ERROR, logger="collab_server.native"):
        for line in [
            *PANIC,
            "Traceback (most recent call last):",
            '  File "/srv/collab_server/crdt/worker.py", line 92, in serve',
            "    answers.write(encode_results(handle_all(documents, ops)))",
            '  File "/srv/collab_server/crdt/documents.py", line 283, in full_state',
            "    return Refusal.NOT_LOADED if held is None else held.doc.get_update()",
            "pyo3_runtime.PanicException: called `Option::unwrap()` on a `None` value",
        ]:
            report.line(line)
    assert [record.getMessage() for record in caplog.records] == [
        "CRDT worker 3: the CRDT library panicked: called `Option::unwrap()` on a `None` value "
        "(at yrs-0.28.0/src/store.rs:234:50)",
        "CRDT worker 3: a Python error ended it: pyo3_runtime.PanicException: called `Option::unwrap()` on a "
        '`None` value (File "/srv/collab_server/crdt/documents.py", line 283, in full_state)',
    ]


def test_the_filter_budgets_each_message_template(caplog: pytest.LogCaptureFixture) -> None:
    flood = logging.getLogger("test.flood")
    limiter = LogLimiter(burst=2, interval=3600)
    flood.addFilter(RateLimitFilter(limiter=limiter))
    with caplog.at_level(logging.WARNING, logger="test.flood"):
        for i in range(5):
            flood.warning("Invalid HTTP request received.")
            flood.warning("peer %d is slow", i)
    assert [record.getMessage() for record in caplog.records] == [
        "Invalid HTTP request received.",
        "peer 0 is slow",
        "Invalid HTTP request received.",
        "peer 1 is slow",
    ]
