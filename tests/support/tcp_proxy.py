"""A TCP proxy the tests control, to cause network faults between a server and a real service.

``cut()`` aborts every open connection and refuses new ones (the database looks down); ``stall()``
stops forwarding without closing anything (a partition: packets go nowhere, nothing is refused);
``restore()`` brings traffic back. Runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from urllib.parse import urlsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, on_reply: Callable[[bytes], None] | None = None) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.on_reply = on_reply  # sees every chunk the target sends back (to count protocol messages)
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._down = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "down" if self._down else "up" if self._flowing.is_set() else "stalled"
        return f"TcpProxy(:{self.port} -> {self.target_host}:{self.target_port}, {state})"

    @classmethod
    def for_url(cls, url: str, *, on_reply: Callable[[bytes], None] | None = None) -> TcpProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432, on_reply=on_reply)

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}").geturl()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        self._flowing.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- faults ---------------------------------------------------------------------------------

    def cut(self) -> None:
        """Abort every connection and refuse new ones until ``restore()``."""
        self._down = True
        self._abort_all()

    def stall(self) -> None:
        """Stop forwarding bytes (both ways, all connections, new ones too) until ``restore()``."""
        self._flowing.clear()

    def restore(self) -> None:
        self._down = False
        self._flowing.set()

    @property
    def connections(self) -> int:
        return len(self._links)

    # -- plumbing -------------------------------------------------------------------------------

    def _abort_all(self) -> None:
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        for source, sink, observe in ((reader, up_writer, None), (up_reader, writer, self.on_reply)):
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink, link, observe))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        observe: Callable[[bytes], None] | None,
    ) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                if link not in self._links:
                    return  # cut while we waited
                if observe is not None:
                    observe(data)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for end in link:
                    with contextlib.suppress(Exception):
                        end.close()
