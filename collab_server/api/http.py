"""HTTP-wide protections, as plain ASGI middleware: a request body size limit (413) and security headers.

Room websockets never pass through here (``CollabApp`` sends them straight to their endpoint).
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collab_server.errors import PayloadTooLarge

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]


class _TooLarge(PayloadTooLarge):
    """Raised from ``receive`` mid-body; an API handler's error mapping turns it into the 413."""


class HttpProtection:
    """Refuses bodies over ``max_body_bytes`` with 413 (by Content-Length, or while they stream in) and
    adds security headers to every HTTP response. Paths that ``large_body_path`` matches (documents) may
    carry up to ``large_body_bytes`` instead."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        large_body_bytes: int = 0,
        large_body_path: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.large_body_bytes = large_body_bytes
        self.large_body_path = large_body_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        if self.large_body_path is not None and self.large_body_path.fullmatch(scope["path"]):
            limit = self.large_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await self._refuse(send, limit)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(f"request bodies are limited to {limit} bytes")
            return message

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps({"error": "payload_too_large", "detail": f"request bodies are limited to "
                           f"{limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
