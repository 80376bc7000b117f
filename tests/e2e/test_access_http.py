"""The HTTP side of access against real servers: running without authentication, the PostgreSQL start
refusal, the body size limit, CORS and security headers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.servers import REPO, ServerProcess, free_port

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., ServerProcess]


def test_without_authentication_every_route_works_for_one_anonymous_owner(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http) as client:
        created = client.post("/api/rooms", json={"name": "dev", "visibility": "private", "password": "pw"})
        assert created.status_code == 201, created.text
        room = created.json()["id"]
        assert created.json()["owner"] == "anonymous" and created.json()["role"] == "owner"
        assert created.json()["ws_url"] == f"ws://127.0.0.1:{server.port}/ws/{room}"
        assert room in [r["id"] for r in client.get("/api/rooms", params={"limit": 200}).json()["rooms"]]
        assert client.patch(f"/api/rooms/{room}", json={"password": None}).json()["has_password"] is False
        assert client.put(f"/api/rooms/{room}/participants/bob", json={"role": "viewer"}).status_code == 200
        assert [p["user"] for p in client.get(f"/api/rooms/{room}/participants").json()["participants"]] == [
            "anonymous", "bob"
        ]
        assert client.get("/api/rooms/any-open-room/presence").json() == {"room": "any-open-room", "entries": []}
        assert client.delete(f"/api/rooms/{room}").status_code == 204
        assert client.get(f"/api/rooms/{room}").status_code == 404


def test_a_postgresql_server_without_authentication_refuses_to_start(tmp_path: Path) -> None:
    env = {"COLLAB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "collab_server", "--port", str(free_port())],
        env=env, cwd=REPO, capture_output=True, timeout=60,
    )
    assert done.returncode != 0
    assert b"COLLAB_AUTH=off" in done.stderr


def test_body_limit_cors_and_security_headers(server_factory: ServerFactory) -> None:
    server = server_factory({"COLLAB_MAX_BODY_BYTES": "1024", "COLLAB_CORS_ORIGINS": "https://app.example"})
    with httpx.Client(base_url=server.http) as client:
        big = client.post("/api/rooms", content=b'{"name": "' + b"x" * 4096 + b'"}')
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large"

        def chunks() -> object:
            yield b'{"name": "'
            yield b"y" * 4096
            yield b'"}'

        streamed = client.post("/api/rooms", content=chunks())  # type: ignore[arg-type]
        assert streamed.status_code == 413

        ok = client.get("/api/rooms", headers={"Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert ok.headers["x-content-type-options"] == "nosniff" and ok.headers["x-frame-options"] == "DENY"
        other = client.get("/api/rooms", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options(
            "/api/rooms",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"},
        )
        assert preflight.status_code == 200
        assert client.get("/api/nothing-here").json()["error"] == "not_found"
        assert client.put("/api/rooms").json()["error"] == "method_not_allowed"
