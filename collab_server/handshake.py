"""The HTTP side of a connection until its request headers are in: a deadline and a cap.

A client that opens connections and sends its upgrade request a byte at a time (slowloris) would
otherwise hold each connection, and a file descriptor, for as long as it likes: uvicorn sets no timer
until a first response is complete. Here every request must have its headers in within
``handshake_timeout`` seconds of the connection (or of the previous response), and at most
``max_handshakes`` connections may be waiting for theirs: a new connection past that drops the one that
has waited longest. A real client sends its headers in one packet and is through in a millisecond, so
it is the slow ones that are evicted, and an attacker cannot lock others out by holding the cap. A
websocket upgrade leaves this protocol as soon as its headers are in, so an open websocket is never
counted.

The bytes of a request whose headers are not in yet are parsed in the server's ``transport.TurnGate``, as
arriving connections' apps are started: when thousands of clients arrive at once, one poll of the sockets
can hand the loop hundreds of upgrade requests, whose parses and hand-overs to the websocket protocol
took about 10 ms a poll. Through the gate they take their turn with the others, within the gate's time
budget for arrivals. What waits is bounded: only a connection still sending its headers waits, and at most
``max_handshakes`` of those exist.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from collab_server import metrics
from collab_server.connection import WebSocketConnection, connection_context
from collab_server.refusals import log_refusal

_waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[GuardedHTTPProtocol, None]] = (
    weakref.WeakKeyDictionary()
)


def waiting_handshakes(loop: asyncio.AbstractEventLoop) -> dict[GuardedHTTPProtocol, None]:
    """The connections of ``loop`` whose request headers are not in yet, longest waiting first."""
    waiting = _waiting.get(loop)
    if waiting is None:
        waiting = _waiting[loop] = {}
    return waiting


class GuardedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on request headers and a cap on those waiting."""

    handshake_timeout = 5.0
    max_handshakes = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._unparsed: list[bytes] | None = None  # bytes read while their parse waits for its turn
        self._gate = connection_context(self.config, self.server_state, self.app_state, self.loop).gate

    def data_received(self, data: bytes) -> None:
        if self._unparsed is not None:  # a parse waits for its turn: these bytes follow it
            self._unparsed.append(data)
        elif self._deadline is None:  # headers in (a request body): parsed at once
            super().data_received(data)
        else:
            # Nothing more is read until its turn: what waits is what one read brought (a client sending
            # headers fast while the gate is busy is held by TCP, not here).
            self.transport.pause_reading()
            self._unparsed = [data]
            self._gate.arrive(self._parse_unparsed, self.loop)

    def _parse_unparsed(self) -> None:
        """The gate's turn for the bytes read so far: parse them, unless the connection was lost."""
        chunks, self._unparsed = self._unparsed or [], None
        if not self.transport.is_closing():
            self.transport.resume_reading()  # before the parse: an upgrade pauses it again, till the 101
        for chunk in chunks:
            if self.transport.is_closing():  # lost, dropped, or answered with an error meanwhile
                return
            if self.parser is None:  # upgraded by an earlier chunk: what the client sent on is the websocket's
                self.transport.get_protocol().data_received(chunk)
            else:
                super().data_received(chunk)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        waiting = waiting_handshakes(self.loop)
        while len(waiting) >= self.max_handshakes:
            oldest = next(iter(waiting))
            oldest._drop("handshakes_full", f"evicted: {self.max_handshakes} connections were sending headers")
        self._start_waiting()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection: a new deadline
            self._start_waiting()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        protocol_class = self.ws_protocol_class
        if isinstance(protocol_class, type) and issubclass(protocol_class, WebSocketConnection):
            # Hand our websocket protocol the request as parsed here; uvicorn's re-serialises it for the
            # next protocol to parse again.
            self.connections.discard(self)
            protocol = protocol_class(
                config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
            )
            self.transport.set_protocol(protocol)
            protocol.upgrade(self.transport, self.scope, self.url)  # type: ignore[arg-type]
        else:
            super().handle_websocket_upgrade()
        # The websocket protocol has the socket now and this one is done. Its parser holds its bound
        # methods as callbacks: a reference cycle, freed only by the cyclic GC unless broken here.
        self.parser = None  # type: ignore[assignment]

    def _start_waiting(self) -> None:
        waiting_handshakes(self.loop)[self] = None
        metrics.HANDSHAKES.set(len(waiting_handshakes(self.loop)))
        self._deadline = self.loop.call_later(self.handshake_timeout, self._expired)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        waiting = waiting_handshakes(self.loop)
        if waiting.pop(self, False) is None:
            metrics.HANDSHAKES.set(len(waiting))

    def _expired(self) -> None:
        self._deadline = None
        self._drop("handshake_timeout", f"request headers not complete within {self.handshake_timeout:g} s")

    def _drop(self, reason: str, text: str) -> None:
        self._stop_waiting()
        metrics.CONNECTIONS_DROPPED.labels(reason).inc()
        log_refusal(reason, "dropped a connection from %s: %s", self.client[0] if self.client else "?", text)
        self.transport.abort()


def guarded_http_protocol(handshake_timeout: float, max_handshakes: int) -> type[GuardedHTTPProtocol]:
    """The protocol class for uvicorn's ``http`` option, with these bounds."""
    return type(
        "GuardedHTTPProtocol",
        (GuardedHTTPProtocol,),
        {"handshake_timeout": handshake_timeout, "max_handshakes": max_handshakes},
    )
