"""A consistent-hash websocket load balancer for tests: the compose topology's nginx, in process.

It reads each connection's request line, hashes the key its nginx configuration names (``$uri``: the
percent-decoded path; ``$request_uri``: path and query string) onto a ring of upstreams, and then
relays bytes both ways untouched, so the websocket upgrade passes through as nginx passes it with
``Upgrade``/``Connection`` set. Like nginx's ``hash ... consistent`` with ``proxy_next_upstream error``,
a connection the chosen upstream refuses goes to the next upstream on the ring. Which upstream took
each connection is recorded in ``routes``, so tests can tell where a room's sockets went.

The ring has 160 points per upstream (as nginx's ketama does); its hash need not be nginx's, only
consistent: the tests ask the ring, not a formula, which upstream a key belongs to.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import zlib
from types import TracebackType
from urllib.parse import unquote, urlsplit

POINTS_PER_UPSTREAM = 160
MAX_HEAD_BYTES = 16 * 1024
HASH_KEYS = ("$uri", "$request_uri")


class HashRing:
    """Consistent hashing of keys onto upstream indexes."""

    def __init__(self, upstreams: list[str]) -> None:
        points = sorted(
            (zlib.crc32(f"{upstream}-{i}".encode()), index)
            for index, upstream in enumerate(upstreams)
            for i in range(POINTS_PER_UPSTREAM)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [index for _, index in points]
        self._count = len(upstreams)

    def order(self, key: str) -> list[int]:
        """Upstream indexes in the order a request for ``key`` tries them: its owner first."""
        start = bisect.bisect_left(self._hashes, zlib.crc32(key.encode()))
        order: list[int] = []
        for step in range(len(self._owners)):
            index = self._owners[(start + step) % len(self._owners)]
            if index not in order:
                order.append(index)
                if len(order) == self._count:
                    break
        return order

    def owner(self, key: str) -> int:
        return self.order(key)[0]


def request_key(target: str, variable: str) -> str:
    """The value of nginx's ``$uri`` or ``$request_uri`` for a request target."""
    if variable == "$request_uri":
        return target
    if variable == "$uri":
        return unquote(urlsplit(target).path)
    raise ValueError(f"hash key {variable!r} is not one of {HASH_KEYS}")


class HashProxy:
    """Listen on 127.0.0.1 and route each connection by the hash of its request's ``key``."""

    def __init__(self, upstreams: list[tuple[str, int]], *, key: str = "$uri", tries: int = 2) -> None:
        request_key("/", key)  # refuse an unknown variable now, not on the first request
        self.upstreams = upstreams
        self.key = key
        self.tries = max(1, tries)
        self.ring = HashRing([f"{host}:{port}" for host, port in upstreams])
        self.port = 0
        self.routes: list[tuple[str, int]] = []  # (key, upstream index) per relayed connection
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"HashProxy(:{self.port} hash {self.key} -> {self.upstreams})"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def owner(self, target: str) -> int:
        """Index of the upstream that owns request target ``target`` (e.g. ``/ws/room``)."""
        return self.ring.owner(request_key(target, self.key))

    async def __aenter__(self) -> HashProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.transport.abort()
            return
        if len(head) > MAX_HEAD_BYTES:
            writer.transport.abort()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        key = request_key(request_line[1] if len(request_line) == 3 else "/", self.key)
        for index in self.ring.order(key)[: self.tries]:
            host, port = self.upstreams[index]
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                continue  # refused: the next upstream on the ring (proxy_next_upstream error)
            self.routes.append((key, index))
            up_writer.write(head)
            link = (writer, up_writer)
            self._links.add(link)
            for source, sink in ((reader, up_writer), (up_reader, writer)):
                task = asyncio.get_running_loop().create_task(self._pipe(source, sink, link))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end both, as a proxy does (a half-open websocket is of no use).
            if link in self._links:
                self._links.discard(link)
                for end in link:
                    with contextlib.suppress(Exception):
                        end.close()
