"""Real server processes on free ports, for end-to-end tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def read_metric(http: str, sample: str, default: float | None = None) -> float:
    """One sample of the /metrics of the server at ``http``, e.g. ``collab_connections`` or
    ``name{label="x"}``; ``default`` if absent (AssertionError when no default is given)."""
    with urllib.request.urlopen(http + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    if default is None:
        raise AssertionError(f"{sample} not in /metrics")
    return default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """``python -m collab_server`` in a child process; ``env`` holds its COLLAB_* settings."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        # Servers run without authentication unless the test configures it: COLLAB_AUTH=off says so
        # explicitly, which a server on PostgreSQL requires to start open.
        defaults = {} if any(key.startswith("COLLAB_JWT_") for key in self.env) else {"COLLAB_AUTH": "off"}
        env = {**os.environ, **defaults, **self.env, "COLLAB_PORT": str(self.port), "COLLAB_HOST": "127.0.0.1"}
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collab_server"], env=env, stdout=self._log, stderr=self._log, cwd=REPO
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log: {self.log_text()}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not answer /healthz within {timeout}s; log: {self.log_text()}")

    def metric(self, sample: str, default: float | None = None) -> float:
        """One sample of the server's /metrics (``read_metric``)."""
        return read_metric(self.http, sample, default)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``timeout``)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    async def astop(self, sig: int = signal.SIGTERM) -> int:
        return await asyncio.to_thread(self.stop, sig)
