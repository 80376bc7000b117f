"""User tokens checked against a JWKS served by a local HTTP server, across a key rotation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import tokens
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e


class Jwks:
    """A JWKS endpoint whose key set the test replaces at will; counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[tokens.RsaKey] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": [key.jwk() for key in jwks.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Jwks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    with Jwks() as served:
        yield served


def status(server: ServerProcess, token: str) -> int:
    return httpx.get(f"{server.http}/api/rooms", headers=tokens.bearer(token)).status_code


def test_keys_come_from_the_jwks_and_a_rotated_key_is_fetched_on_its_first_token(
    jwks: Jwks, tmp_path: Path
) -> None:
    first, second, unknown = tokens.RsaKey(), tokens.RsaKey(), tokens.RsaKey()
    jwks.keys = [first]
    server = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": "memory://",
            "COLLAB_JWT_JWKS_URL": jwks.url,
            "COLLAB_JWT_AUDIENCE": tokens.AUDIENCE,
        },
        log_path=tmp_path / "server.log",
    ).start()
    try:
        assert status(server, first.sign(tokens.claims("alice"))) == 200
        assert status(server, first.sign(tokens.claims("bob"))) == 200
        assert jwks.fetches == 1, "a known kid must be served from the cache"

        jwks.keys = [first, second]  # the provider rotates: a new kid appears
        assert status(server, second.sign(tokens.claims("alice"))) == 200
        assert jwks.fetches == 2

        assert status(server, unknown.sign(tokens.claims("alice"))) == 401  # a kid the provider lacks
        assert status(server, tokens.hs256("alice")) == 401  # no shared secret configured: HS256 refused
        assert status(server, tokens.hmac_with(first.public_pem)) == 401
        assert status(server, tokens.unsigned()) == 401

        jwks.keys = [second]  # the old key retired; learnt at the next fetch
        assert status(server, unknown.sign(tokens.claims("carol"))) == 401
        assert status(server, first.sign(tokens.claims("alice"))) == 401
        assert status(server, second.sign(tokens.claims("alice"))) == 200
    finally:
        server.stop()
