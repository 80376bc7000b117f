"""The example tldraw app (examples/tldraw) served by its own ``npm run dev`` server, for browser tests."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.servers import REPO, free_port

APP_DIR = REPO / "examples" / "tldraw"


class ExampleApp:
    """``node dev.mjs`` on a free port, passing /api to the collab server at ``server_http``."""

    def __init__(self, server_http: str, log_path: Path) -> None:
        self.port = free_port()
        self.server_http = server_http
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ExampleApp:
        env = {**os.environ, "PORT": str(self.port), "COLLAB_URL": self.server_http}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(["node", "dev.mjs"], cwd=APP_DIR, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"example app exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/app.js", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"example app did not come up: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
