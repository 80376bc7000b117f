"""Native panics through logging, not raw on stderr.

The CRDT workers' stderr is read by ``collab_server.crdt.process`` through the same ``NativeReport``.

When the CRDT library (Rust, through pyo3) panics, Rust's panic hook writes the report straight to file
descriptor 2 (past ``--log-json``, with the build machine's paths), and with ``RUST_BACKTRACE`` set a
whole backtrace. Python cannot hook that writer, so the server process points fd 2 at a pipe and reads
it on a thread: each panic becomes one log record (``collab_server.native``, JSON under ``--log-json``,
rate-limited, counted in ``collab_native_panics_total``) naming the crate's source location without the
build path; any other line written to fd 2 by native code is logged as it is. Python's own stderr
(``sys.stderr``, where the log handler writes) moves to a copy of the real fd 2, and so does
faulthandler, so that a fatal error (which kills the process before the thread could read) is still
written directly.

The pipe's write end is non-blocking: a flood of panics can lose report lines (counted as suppressed),
but can never block the event loop, which holds the GIL while the library writes.
"""

from __future__ import annotations

import faulthandler
import fcntl
import logging
import os
import re
import sys
import threading

from collab_server import metrics
from collab_server.refusals import LogLimiter

logger = logging.getLogger("collab_server.native")

_PANIC = re.compile(r"^thread '[^']*'(?: \(\d+\))? panicked at (?P<where>.*?):?$")
# ".../index.crates.io-1949cf8c6b5b557f/yrs-0.28.0/src/store.rs:234:50" -> "yrs-0.28.0/src/store.rs:234:50"
_CRATE_PATH = re.compile(r"([A-Za-z0-9_.-]+-\d+\.\d+[^/]*/.*)$")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_routed = False


def route_native_stderr() -> None:
    """Point fd 2 at a pipe read by a logging thread (once per process)."""
    global _routed
    # Read by Rust at the first panic: a backtrace (dozens of lines with build paths) helps no operator.
    os.environ["RUST_BACKTRACE"] = "0"
    if _routed:
        return
    _routed = True
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # the default 64 KiB pipe only means lines are dropped sooner under a flood
    os.set_blocking(write_end, False)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(real_stderr, "w", buffering=1, errors="backslashreplace", closefd=False)
    faulthandler.enable(file=sys.stderr)
    threading.Thread(target=_pump, args=(read_end,), name="native-stderr", daemon=True).start()


def _pump(read_end: int) -> None:
    reader = NativeReport()
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            return
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            reader.line(line.decode("utf-8", "replace"))


class NativeReport:
    """Turns the lines native code writes to stderr into log records: one per panic."""

    def __init__(self, limiter: LogLimiter | None = None, *, source: str = "") -> None:
        self._limiter = limiter or LogLimiter()
        # Who wrote the lines (e.g. "CRDT worker 2"), put before each record's message.
        self._prefix = f"{source}: " if source else ""
        self._where: str | None = None
        self._message: list[str] = []
        # A Python traceback being read (a CRDT worker that died of an exception): its last frame.
        self._traceback: str | None = None

    def line(self, text: str) -> None:
        text = text.rstrip("\r")
        if self._python_traceback(text):
            return
        match = _PANIC.match(text)
        if match is not None:
            self._flush()
            where = match.group("where")
            crate = _CRATE_PATH.search(where)
            self._where = crate.group(1) if crate else os.path.basename(where)
            return
        if self._where is not None:
            if text.startswith("note: "):
                self._flush()
            else:
                self._message.append(text)
            return
        if text.strip():
            self._log("native_stderr", "native library wrote to stderr: %s", text[:300])

    def _python_traceback(self, text: str) -> bool:
        """Fold a Python traceback into one record: the exception and the frame that raised it. (Line by
        line, the rate limit of stray native lines would keep the one line that names the error out.)"""
        if text == "Traceback (most recent call last):":
            self._flush()
            self._traceback = ""
            return True
        if self._traceback is None:
            return False
        if text.startswith("  File "):
            self._traceback = text.strip()
        elif not text.startswith(" ") and text.strip():
            where, self._traceback = self._traceback, None
            self._log("python_error", "a Python error ended it: %s (%s)", text[:300], where)
        return True

    def _flush(self) -> None:
        if self._where is None:
            return
        where, message = self._where, " ".join(part.strip() for part in self._message if part.strip())
        self._where, self._message = None, []
        metrics.NATIVE_PANICS.inc()
        self._log("native_panic", "the CRDT library panicked: %s (at %s)", message or "no message", where)

    def _log(self, reason: str, message: str, *args: object) -> None:
        suppressed = self._limiter.allow(reason)
        if suppressed is None:
            return
        if suppressed:
            message += " (%d more like it not logged)"
            args = (*args, suppressed)
        logger.error(self._prefix + message, *args)
