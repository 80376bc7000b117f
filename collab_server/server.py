"""Run the app under uvicorn with the server's settings.

Shutdown (SIGTERM or SIGINT) is uvicorn's orderly one: stop accepting, close every websocket with 1012
(clients reconnect, to another replica if there is one), wait for the handlers to finish, then run the
lifespan's shutdown, which flushes every room to the store.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from collab_server.app import create_app
from collab_server.connection import WebSocketConnection
from collab_server.fdlimit import presize_fd_table, raise_fd_limit
from collab_server.gc_policy import GcPolicy
from collab_server.handshake import guarded_http_protocol
from collab_server.logs import configure_logging
from collab_server.native_stderr import route_native_stderr
from collab_server.settings import Settings
from collab_server.transport import CollabWebSocketProtocol


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    log_config = configure_logging(settings.log_level, json_lines=settings.log_json)
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=guarded_http_protocol(settings.handshake_timeout, settings.max_handshakes),
        # Our own websocket protocol; uvicorn's over websockets' where permessage-deflate is wanted.
        ws=CollabWebSocketProtocol if settings.ws_deflate else WebSocketConnection,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.ws_deflate,
        ws_ping_interval=settings.ping_interval or None,
        ws_ping_timeout=settings.ping_timeout or None,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        log_config=log_config,
        log_level=None,  # levels come from log_config; uvicorn's would override them
        access_log=False,
        server_header=False,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, with this process's garbage collector policy running while it serves."""

    def __init__(self, config: uvicorn.Config, gc_policy: GcPolicy) -> None:
        super().__init__(config)
        self.gc_policy = gc_policy
        self._gc_policy_on = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        # Connections are freed without the cyclic collector on uvloop (tests/e2e/test_gc_policy.py);
        # asyncio's own transports were not checked, so under them the collector keeps its default.
        self._gc_policy_on = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        if self._gc_policy_on:
            self.gc_policy.start()
        try:
            await super().serve(sockets)
        finally:
            self.gc_policy.stop()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the app's lifespan has run: everything start-up builds exists
        if self._gc_policy_on and not self.should_exit:
            self.gc_policy.freeze_startup()


def serve(settings: Settings) -> None:
    # Before logging is configured: its handler must write to the real stderr, not the captured one.
    route_native_stderr()
    config = uvicorn_config(settings)  # configures logging
    raise_fd_limit()  # before the app's lifespan sizes its connection cap on it
    presize_fd_table(settings.max_connections)  # so no accept() waits for the table to grow
    _Server(config, GcPolicy(settings.gc_freeze_interval, settings.gc_threshold_values)).run()
