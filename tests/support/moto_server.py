"""moto's S3-compatible server in a child process on a free loopback port (the tests' real S3 endpoint)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.servers import free_port

# moto accepts any credentials: made up per test session, they only exercise SigV4 signing
ACCESS_KEY = f"AKIA{secrets.token_hex(8).upper()}"
SECRET_KEY = secrets.token_urlsafe(30)
REGION = "us-east-1"


class MotoServer:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto did not come up: {self.log_path.read_text()[-2000:]}")

    def create_bucket(self, name: str) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION)
        s3.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
