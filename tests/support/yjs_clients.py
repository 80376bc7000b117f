"""Drive real JavaScript Yjs clients (yjs + y-websocket under Node) from async pytest tests.

One :class:`YjsNode` is one ``node tests/js/driver.mjs`` process that can host many clients;
each :class:`YjsClient` is a ``Y.Doc`` plus a ``WebsocketProvider`` living inside it. The
driver speaks JSON lines over stdin/stdout (see ``tests/js/driver.mjs``).

Example::

    async with YjsNode() as node:
        a = await node.connect("ws://127.0.0.1:8000/ws", "room-1")
        b = await node.connect("ws://127.0.0.1:8000/ws", "room-1")
        await a.wait_synced()
        await b.wait_synced()
        await a.insert_text(0, "hello")

        async def converged() -> None:
            assert await b.text() == "hello"

        await eventually(converged)

Requires ``npm install --no-package-lock`` in ``tests/js`` (creates ``tests/js/node_modules``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

__all__ = [
    "DRIVER_PATH",
    "ClientStatus",
    "Snapshot",
    "YjsClient",
    "YjsDriverError",
    "YjsNode",
]

#: ``tests/js/driver.mjs``, resolved relative to this file.
DRIVER_PATH: Path = Path(__file__).resolve().parent.parent / "js" / "driver.mjs"

# Reply lines can be large (snapshots of multi-MiB documents carry the whole update in base64);
# asyncio's default StreamReader line limit is only 64 KiB.
_LINE_LIMIT = 256 * 1024 * 1024



class YjsDriverError(Exception):
    """The driver answered ``ok: false``, timed out, or is not running."""


class ClientStatus(TypedDict):
    """Result of :meth:`YjsClient.status` (keys exactly as the driver sends them)."""

    connected: bool
    """The websocket is open (``provider.wsconnected``)."""
    synced: bool
    """``provider.synced``: a SyncStep2 was received on the current connection."""
    shouldConnect: bool
    """False after disconnect()/kill(), or after the server closed with a 4400-4499 code."""
    closeCodes: list[int | None]
    """Every close the provider saw, in order; ``None`` = closed locally (disconnect/watchdog),
    1006 = abnormal (dropped socket, connection refused, HTTP error on upgrade)."""
    closeReasons: list[str | None]
    """Close reasons parallel to ``closeCodes``."""
    wsconnects: int
    """How many times a websocket to the server was opened."""
    lastError: str | None
    """Last socket-level error message (e.g. ``connect ECONNREFUSED ...``, ``Unexpected server
    response: 403``) or ``None``."""


class Snapshot(TypedDict):
    """Result of :meth:`YjsClient.snapshot` (keys exactly as the driver sends them)."""

    text: dict[str, str]
    """Y.Text contents by name (``{"text": ...}`` unless other names were requested)."""
    map: dict[str, Any]
    """``doc.getMap("map").toJSON()``."""
    array: list[Any]
    """``doc.getArray("array").toJSON()``."""
    stateVector: str
    """Base64 of ``Y.encodeStateVector(doc)`` (entries sorted by client id, so comparable)."""
    stateVectorMap: dict[str, int]
    """The decoded state vector: ``{str(clientID): clock}``."""
    update: str
    """Base64 of ``Y.encodeStateAsUpdate(doc)``. Not guaranteed byte-identical between
    converged replicas; compare content and state vectors instead."""


class YjsNode:
    """A Node process hosting many Yjs clients; use as ``async with YjsNode() as node``."""

    def __init__(
        self,
        *,
        node: str = "node",
        driver: Path | str = DRIVER_PATH,
        call_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Configure (but do not start) the driver process.

        Args:
            node: the ``node`` executable.
            driver: path of ``driver.mjs``.
            call_timeout: default seconds to wait for any reply before raising.
            env: extra environment variables for the Node process.
        """
        self._node = node
        self._driver = Path(driver)
        self._call_timeout = call_timeout
        self._env = dict(env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._client_names = itertools.count(1)
        self._dead: str | None = None  # why the driver can no longer be used

    async def __aenter__(self) -> YjsNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pid(self) -> int | None:
        """PID of the Node process, if started."""
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        """Spawn the driver process and the reply-routing reader task."""
        if self._proc is not None:
            raise YjsDriverError("driver already started")
        if not (self._driver.parent / "node_modules" / "y-websocket").is_dir():
            raise YjsDriverError(
                f"{self._driver.parent}/node_modules missing: run `npm install --no-package-lock` there"
            )
        self._proc = await asyncio.create_subprocess_exec(
            self._node,
            str(self._driver),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # inherit: driver diagnostics show up in pytest's captured stderr
            cwd=str(self._driver.parent),
            env={**os.environ, **self._env},
            limit=_LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read_replies(), name="yjs-driver-reader")

    async def _read_replies(self) -> None:
        """Route every reply line to the future waiting for its id."""
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        reason = "driver stdout closed"
        try:
            while line := await stdout.readline():
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    reason = f"driver wrote a non-JSON line to stdout: {line[:200]!r}"
                    break
                fut = self._pending.pop(msg.get("id"), None)
                if fut is None or fut.done():
                    continue  # caller gave up (timeout) or an id-less protocol error
                if msg.get("ok"):
                    fut.set_result(msg.get("result"))
                else:
                    fut.set_exception(YjsDriverError(str(msg.get("error"))))
        except Exception as exc:
            reason = f"driver reader failed: {exc!r}"
        finally:
            # stdout EOF usually means the process is exiting; give it a moment to report a code
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 1.0)
            rc = self._proc.returncode
            self._dead = reason if rc is None else f"{reason} (exit code {rc})"
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(YjsDriverError(self._dead))
            self._pending.clear()

    async def call(self, cmd: str, *, call_timeout: float | None = None, **kwargs: Any) -> Any:
        """Send one command and return its ``result``.

        Args:
            cmd: driver command name (e.g. ``"insertText"``).
            call_timeout: seconds to wait for the reply (default: the node's ``call_timeout``).
            **kwargs: command arguments, sent as JSON fields.

        Raises:
            YjsDriverError: on ``ok: false``, on timeout, or if the driver is not running.
        """
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise YjsDriverError("driver not started")
        if self._dead is not None:
            raise YjsDriverError(self._dead)
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        line = json.dumps({"id": msg_id, "cmd": cmd, **kwargs}, separators=(",", ":")) + "\n"
        timeout = self._call_timeout if call_timeout is None else call_timeout
        try:
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
            return await asyncio.wait_for(fut, timeout)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise YjsDriverError(f"driver not accepting commands: {exc!r}") from exc
        except TimeoutError as exc:
            raise YjsDriverError(f"{cmd}: no reply from driver within {timeout} s") from exc
        finally:
            self._pending.pop(msg_id, None)

    async def connect(
        self,
        url: str,
        room: str,
        *,
        params: dict[str, str] | None = None,
        connect: bool = True,
        deflate: bool = False,
        headers: dict[str, str] | None = None,
        max_backoff_ms: int = 500,
        name: str | None = None,
    ) -> YjsClient:
        """Create a client (Y.Doc + WebsocketProvider); does not wait for sync.

        Args:
            url: URL prefix, e.g. ``ws://127.0.0.1:PORT/ws``; the socket goes to
                ``{url}/{encodeURIComponent(room)}?{params}``. Loopback hosts only.
            room: room name (percent-encoded by the driver).
            params: query parameters (y-websocket encodes keys and values with
                ``encodeURIComponent``).
            connect: open the socket now (``False``: call :meth:`YjsClient.reconnect` later).
            deflate: offer permessage-deflate (off by default).
            headers: extra HTTP headers for the upgrade request.
            max_backoff_ms: cap of the provider's exponential reconnect backoff.
            name: driver-side client id (default ``c1``, ``c2``, ...).
        """
        client = name if name is not None else f"c{next(self._client_names)}"
        args: dict[str, Any] = {
            "client": client,
            "url": url,
            "room": room,
            "params": params or {},
            "connect": connect,
            "deflate": deflate,
            "maxBackoffTime": max_backoff_ms,
        }
        if headers:
            args["headers"] = headers
        await self.call("connect", **args)
        return YjsClient(self, client)

    async def list_clients(self) -> list[str]:
        """Ids of all clients currently hosted by the driver."""
        result: list[str] = await self.call("listClients")
        return result

    async def close(self, timeout: float = 5.0) -> None:
        """Send ``shutdown``, wait for the process to exit, kill it if it does not."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and self._dead is None:
            with contextlib.suppress(YjsDriverError):
                await self.call("shutdown", call_timeout=timeout)
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # the driver also exits when stdin closes
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader


class YjsClient:
    """One JS client in a :class:`YjsNode`; methods mirror the driver commands."""

    def __init__(self, node: YjsNode, client: str) -> None:
        """Wrap the driver-side client ``client`` (use :meth:`YjsNode.connect` instead)."""
        self.node = node
        self.name = client

    def __repr__(self) -> str:
        return f"YjsClient({self.name!r})"

    async def _call(self, cmd: str, **kwargs: Any) -> Any:
        return await self.node.call(cmd, client=self.name, **kwargs)

    # -- sync ---------------------------------------------------------------------------------
    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Wait until ``provider.synced`` (SyncStep2 received); raises YjsDriverError on timeout."""
        await self.node.call(
            "waitSynced", client=self.name, timeoutMs=int(timeout * 1000), call_timeout=timeout + 5
        )

    # -- Y.Text -------------------------------------------------------------------------------
    async def insert_text(self, index: int, text: str, name: str = "text") -> None:
        """``doc.getText(name).insert(index, text)``."""
        await self._call("insertText", name=name, index=index, text=text)

    async def delete_text(self, index: int, length: int, name: str = "text") -> None:
        """``doc.getText(name).delete(index, length)``."""
        await self._call("deleteText", name=name, index=index, length=length)

    async def text(self, name: str = "text") -> str:
        """Current content of ``doc.getText(name)``."""
        result: str = await self._call("getText", name=name)
        return result

    # -- Y.Map --------------------------------------------------------------------------------
    async def map_set(self, key: str, value: Any, name: str = "map") -> None:
        """``doc.getMap(name).set(key, value)`` with a JSON value."""
        await self._call("mapSet", name=name, key=key, value=value)

    async def map_delete(self, key: str, name: str = "map") -> None:
        """``doc.getMap(name).delete(key)``."""
        await self._call("mapDelete", name=name, key=key)

    async def map(self, name: str = "map") -> dict[str, Any]:
        """``doc.getMap(name).toJSON()``."""
        result: dict[str, Any] = await self._call("getMap", name=name)
        return result

    # -- Y.Array ------------------------------------------------------------------------------
    async def array_push(self, values: list[Any], name: str = "array") -> None:
        """``doc.getArray(name).push(values)``."""
        await self._call("arrayPush", name=name, values=values)

    async def array_insert(self, index: int, values: list[Any], name: str = "array") -> None:
        """``doc.getArray(name).insert(index, values)``."""
        await self._call("arrayInsert", name=name, index=index, values=values)

    async def array_delete(self, index: int, length: int = 1, name: str = "array") -> None:
        """``doc.getArray(name).delete(index, length)``."""
        await self._call("arrayDelete", name=name, index=index, length=length)

    async def array(self, name: str = "array") -> list[Any]:
        """``doc.getArray(name).toJSON()``."""
        result: list[Any] = await self._call("getArray", name=name)
        return result

    # -- YKeyValue records (the tldraw layout) --------------------------------------------------
    async def kv_set(self, key: str, value: Any, name: str) -> None:
        """``new YKeyValue(doc.getArray(name)).set(key, value)`` (one YKeyValue per array and client)."""
        await self._call("kvSet", name=name, key=key, value=value)

    async def kv_delete(self, key: str, name: str) -> None:
        """``YKeyValue.delete(key)`` on the array ``name``."""
        await self._call("kvDelete", name=name, key=key)

    async def kv_records(self, name: str) -> dict[str, Any]:
        """What the client's YKeyValue on ``name`` shows: ``{key: value}``."""
        result: dict[str, Any] = await self._call("kvRecords", name=name)
        return result

    # -- whole document -----------------------------------------------------------------------
    async def random_edits(self, count: int, seed: int) -> None:
        """``count`` seeded random edits on Y.Text "text", Y.Map "map", Y.Array "array";
        one transaction (hence one update message) per edit."""
        await self._call("randomEdits", count=count, seed=seed)

    async def snapshot(self, texts: list[str] | None = None) -> Snapshot:
        """Content of the default types plus state vector and full update (base64).

        Args:
            texts: Y.Text names to include under ``"text"`` (default ``["text"]``).
        """
        kwargs: dict[str, Any] = {} if texts is None else {"texts": texts}
        result: Snapshot = await self._call("snapshot", **kwargs)
        return result

    # -- awareness ----------------------------------------------------------------------------
    async def set_awareness(self, state: dict[str, Any] | None) -> None:
        """``awareness.setLocalState(state)``; ``None`` announces that this client left."""
        await self._call("setAwareness", state=state)

    async def set_awareness_field(self, field: str, value: Any) -> None:
        """``awareness.setLocalStateField(field, value)``."""
        await self._call("setAwarenessField", field=field, value=value)

    async def awareness(self) -> dict[int, Any]:
        """All awareness states this client knows, own included: ``{clientID: state}``."""
        result: dict[str, Any] = await self._call("getAwareness")
        return {int(k): v for k, v in result.items()}

    async def client_id(self) -> int:
        """``doc.clientID`` (the key of this client's awareness state)."""
        result: int = await self._call("clientId")
        return result

    # -- connection control -------------------------------------------------------------------
    async def disconnect(self) -> None:
        """``provider.disconnect()``: awareness-null message, clean close, no reconnect."""
        await self._call("disconnect")

    async def reconnect(self) -> None:
        """``provider.connect()``; does not wait for sync."""
        await self._call("reconnect")

    async def drop_socket(self) -> bool:
        """Terminate the TCP socket abruptly (no close frame); the provider auto-reconnects.

        Returns once the provider has processed the close (``synced`` is then False), so a
        following :meth:`wait_synced` waits for the re-sync. False if there was no socket.
        """
        result: bool = await self._call("dropSocket")
        return result

    async def kill(self) -> bool:
        """Like :meth:`drop_socket` but the provider stops reconnecting (crashed client)."""
        result: bool = await self._call("kill")
        return result

    async def destroy(self) -> None:
        """``provider.destroy()`` + ``doc.destroy()``; the client id becomes unknown."""
        await self._call("destroy")

    async def status(self) -> ClientStatus:
        """Connection state and history, see :class:`ClientStatus`."""
        result: ClientStatus = await self._call("status")
        return result

    async def apply_remote_update_count(self) -> int:
        """Number of doc 'update' events whose origin was the provider (received from server)."""
        result: int = await self._call("applyRemoteUpdateCount")
        return result
