"""The ``collab.transport`` ASGI extension, the pieces our websocket protocols share, and the protocol
that serves when permessage-deflate is on: uvicorn's sans-I/O one over websockets' (otherwise our own
serves, ``collab_server.connection``).

The extension's value is the connection itself (``CollabTransport``). It gives an app what ASGI cannot do
well at scale:

- ``reset()``: drop a connection whose reader stopped reading. Through ASGI a close frame waits behind the
  full send buffer like any other message, and a plain close leaves the kernel holding every unsent byte.
- ``send_nowait(data, frame)``: write one binary message *now*, without a coroutine or task, when the
  socket is writable. A broadcast to N peers is then N synchronous writes instead of N task wake-ups; it
  returns False (and the caller falls back to the awaited ASGI send) when flow control says to wait.
  ``frame``, when given, is ``data`` already framed (``binary_frame``): a broadcast frames its message once
  for all its peers, and each write is then one buffer handed to the kernel as it is.
- ``offer_frames(handler)``: hand each complete binary message to ``handler`` right in the data callback
  that read it, while the app's task is not behind (nothing queued); the handler may decline it, and then
  it is queued for ``receive()`` as usual. A message taken this way costs no queue entry, no future and no
  task wake-up, and no pause and resume of the socket's reading (``collab_server.reader``).
- ``detach(resume)``: let the app's task end while the connection stays open; ``resume`` runs in a short
  task of its own whenever something waits in the receive queue (see ``Resume``). An idle connection then
  holds no task, no coroutine chain and no ASGI scope: about half of its memory (``collab_server.session``).
  The resume waits its turn in the server's ``TurnGate``, which starts a few dozen per loop turn (before
  the apps of arriving connections, which our own protocol starts through it too): thousands of clients
  arriving or leaving at once do not stall the loop.
- ``send``: the connection's own ASGI send, for an app that keeps sending after it detached (Starlette's
  ``WebSocket.send`` would keep the WebSocket, and the scope, alive).

The endpoint uses the extension only when present, so the app still runs under any ASGI server.

Replies the protocol writes on its own stay inside the peer's send bounds too: a client that pings but
never reads would otherwise grow the write buffer by a pong per ping without limit, so a ping that
arrives while more than ``max_buffered_bytes()`` (the ``send_queue_bytes`` setting) wait to be sent drops
the connection; and since every ping costs a parse and a pong, a client may send ``PING_BURST`` pings
and then ``PING_RATE`` a second (browsers cannot send pings at all; libraries send one every few
seconds). A keepalive timeout drops it as well (a reset, not a close that would wait behind the
unread buffer of a dead peer).

We build on the sans-I/O implementation because it runs keepalive pings from loop timers instead of a
task per connection, and honours the transport's flow control before each send.

A detached idle connection is mostly this protocol, so it trims what uvicorn keeps for a connection's
whole life but needs only briefly (what each trim saves is measured in docs/benchmarks.md, with
bench/idle_memory.py):

- its attributes live in slots: uvicorn sets 37 of them, past the 30 that CPython's shared-key instance
  dicts hold, so each protocol otherwise carries a 1.6 KB dict;
- the receive queue and the ``writable`` flag allocate their waiter lists only while someone waits
  (``asyncio.Queue`` holds four deques and an Event, ``asyncio.Event`` one deque);
- once the opening handshake is done, the handshake request and response (with their headers) are
  released; the ASGI scope keeps its own copy of the request headers;
- request headers that repeat across connections (host, upgrade, user-agent, ...) are shared tuples;
- the keepalive ping timers of all connections share one loop timer per quarter second: a uvloop
  ``call_later`` handle costs ten times the RSS of a slot entry. A ping goes out at most
  ``KEEPALIVE_RESOLUTION`` seconds after it is due, never before; pong deadlines are exact loop timers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import struct
import time
import weakref
from asyncio import AbstractEventLoop, CancelledError, Future, QueueEmpty, Task, get_running_loop, sleep
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol as SansIOProtocol
from websockets.protocol import State
from websockets.streams import StreamReader

from collab_server import metrics
from collab_server.refusals import log_refusal

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

TRANSPORT_EXTENSION = "collab.transport"

_logger = logging.getLogger("uvicorn.error")  # where uvicorn reports an app's exceptions

_pack_u16 = struct.Struct("!BBH").pack
_pack_u64 = struct.Struct("!BBQ").pack
_FIN_BINARY = 0x82


def binary_frame_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, unfragmented binary frame (server to client) of ``length`` bytes."""
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 1 << 16:
        return _pack_u16(_FIN_BINARY, 126, length)
    return _pack_u64(_FIN_BINARY, 127, length)


def binary_frame(data: bytes) -> bytes:
    """``data`` as one unmasked binary frame, header and payload in one buffer (a copy of ``data``)."""
    return binary_frame_header(len(data)) + data


_NOTHING: Any = object()

Receive = Callable[[], Awaitable[Any]]
"""The ASGI ``receive`` callable: the next event for the app."""

Resume = Callable[[Receive, Callable[[], bool]], Awaitable[bool]]
"""``resume(receive, idle)``: a detached connection's app, run in a task of its own whenever something
waits in the receive queue (frames the frame handler declined, the disconnect). It reads with
``receive`` while ``idle()`` is False, and returns True to go back to waiting without a task, or False
when it is done with the connection (see ``detach``)."""

FrameHandler = Callable[[bytes, float], bool]
"""``handler(message, read_at)``, called from the protocol's data callback with a complete binary message
while nothing waits in the receive queue (``read_at``: the loop time at which that callback began). True:
the handler took it; False: queue it for the app's ``receive()`` as usual."""


class CollabTransport(Protocol):
    """The value of ``scope["extensions"]["collab.transport"]``: the connection itself (see the module
    docstring for each method). The app keeps this one reference, not a bound method per use: an idle
    connection's peer and session would otherwise hold four of them (64 bytes each)."""

    def reset(self) -> None: ...

    def send_nowait(self, data: bytes, frame: bytes | None = None) -> bool: ...

    def offer_frames(self, handler: FrameHandler | None) -> None: ...

    def detach(self, resume: Resume) -> None: ...

    async def send(self, message: Any) -> None: ...


class ReceiveQueue:
    """What the protocol uses of ``asyncio.Queue`` (``put_nowait``, ``get``, ``get_nowait``, ``empty``,
    ``qsize``), with the same semantics (FIFO, unbounded, getters woken in order), but nothing allocated
    while it is empty and nobody waits.

    The oldest waiting item sits in a slot; a deque exists only while two or more wait. It keeps the loop
    it runs on: a waiting reader needs a future per frame, and on Python 3.11 ``get_running_loop()`` makes
    a ``getpid()`` system call each time (5 % of the networking process with 1,000 busy rooms, measured
    with ``py-spy --native``; docs/benchmarks.md).
    """

    __slots__ = ("_getters", "_head", "_loop", "_rest", "on_put")

    def __init__(self, loop: AbstractEventLoop) -> None:
        self._loop = loop
        self._head: Any = _NOTHING
        self._rest: deque[Any] | None = None
        self._getters: list[Any] | None = None
        # Called after each put_nowait: how a detached connection learns that its app has work again.
        self.on_put: Callable[[], None] | None = None

    def qsize(self) -> int:
        if self._head is _NOTHING:
            return 0
        return 1 + (len(self._rest) if self._rest else 0)

    def empty(self) -> bool:
        return self._head is _NOTHING

    def put_nowait(self, item: Any) -> None:
        if self._head is _NOTHING:
            self._head = item
        else:
            if self._rest is None:
                self._rest = deque()
            self._rest.append(item)
        self._wakeup_next()
        if self.on_put is not None:
            self.on_put()

    def get_nowait(self) -> Any:
        item = self._head
        if item is _NOTHING:
            raise QueueEmpty
        rest = self._rest
        if rest:
            self._head = rest.popleft()
            if not rest:
                self._rest = None
        else:
            self._head = _NOTHING
        return item

    async def get(self) -> Any:
        while self._head is _NOTHING:
            getter = self.getter()
            try:
                await getter
            except BaseException:
                self.getter_failed(getter)
                raise
        return self.get_nowait()

    def getter(self) -> Future[None]:
        """A future that completes when an item may be there (for a caller that awaits it directly)."""
        getter: Future[None] = self._loop.create_future()
        if self._getters is None:
            self._getters = []
        self._getters.append(getter)
        return getter

    def getter_failed(self, getter: Future[None]) -> None:
        """The caller awaiting ``getter`` was interrupted (cancelled): pass its wake-up on, as asyncio.Queue."""
        getter.cancel()  # in case it is not done yet
        if self._getters is not None:
            with contextlib.suppress(ValueError):
                self._getters.remove(getter)
            if not self._getters:
                self._getters = None
        if self._head is not _NOTHING and not getter.cancelled():
            self._wakeup_next()

    def _wakeup_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not getters:
            self._getters = None


class WritableFlag:
    """``asyncio.Event`` (``set``, ``clear``, ``is_set``, ``wait``), with its waiter list allocated only
    while someone waits: uvicorn's ``writable``, cleared while the transport is over its high-water mark."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[Any] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            if self._waiters:
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None


PING_RATE = 10.0
PING_BURST = 100
"""A client may send this many pings at once, and ``PING_RATE`` per second after that."""

KEEPALIVE_RESOLUTION = 0.25
"""Seconds: keepalive pings are grouped into slots this long, and sent at most this late."""


class KeepaliveTimer:
    """A keepalive timer's handle. ``cancel()`` is all uvicorn uses of the TimerHandle it replaces."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None  # releases the protocol at once; the slot drops the handle when it runs

    def cancelled(self) -> bool:
        return self.callback is None


class KeepaliveTimers:
    """One event loop's keepalive timers, in slots of ``KEEPALIVE_RESOLUTION`` seconds, each slot run by a
    single loop timer, instead of one loop timer per connection. Holds no reference to the loop."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, list[KeepaliveTimer]] = {}

    def __len__(self) -> int:
        return sum(1 for timers in self._slots.values() for timer in timers if timer.callback is not None)

    def call_later(self, loop: AbstractEventLoop, delay: float, callback: Callable[[], None]) -> KeepaliveTimer:
        """Run ``callback`` once, no sooner than ``delay`` seconds from now and at most one slot later."""
        slot = math.ceil((loop.time() + delay) / KEEPALIVE_RESOLUTION)
        timer = KeepaliveTimer(callback)
        timers = self._slots.get(slot)
        if timers is None:
            self._slots[slot] = [timer]
            loop.call_at(slot * KEEPALIVE_RESOLUTION, self._run, loop, slot)
        else:
            timers.append(timer)
        return timer

    def _run(self, loop: AbstractEventLoop, slot: int) -> None:
        for timer in self._slots.pop(slot, ()):
            callback = timer.callback
            if callback is None:
                continue
            timer.callback = None
            try:
                callback()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as asyncio's Handle: report, and run the slot's other timers
                loop.call_exception_handler(
                    {"message": f"Exception in keepalive callback {callback!r}", "exception": exc}
                )


_keepalive_timers: weakref.WeakKeyDictionary[AbstractEventLoop, KeepaliveTimers] = weakref.WeakKeyDictionary()


def keepalive_timers(loop: AbstractEventLoop) -> KeepaliveTimers:
    timers = _keepalive_timers.get(loop)
    if timers is None:
        timers = _keepalive_timers[loop] = KeepaliveTimers()
    return timers


class PollClock:
    """When the loop's current poll began handing sockets their data: the start of a frame budget that
    every socket read in that poll shares (``collab_server.reader``).

    The kernel hands the loop up to a thousand ready sockets in one poll, and the loop calls their data
    callbacks one after the other before anything else runs. A budget per socket read bounds one socket,
    not the poll: a thousand sockets with a few frames each made turns of 20-60 ms (a storm of joining
    clients, whose sync and awareness messages fan out to their rooms). With the poll's start as the
    budget's start, the frames past it wait for a later turn, and the loop polls and runs timers between.
    """

    __slots__ = ("_loop", "_started")

    def __init__(self, loop: AbstractEventLoop) -> None:
        self._loop = loop
        self._started: float | None = None

    def started(self, now: float) -> float:
        """When this poll's data callbacks began (``now``, for the first of them)."""
        started = self._started
        if started is None:
            started = self._started = now
            # Ready callbacks run once the poll's I/O callbacks are done: the next poll starts afresh.
            self._loop.call_soon(self._end)
        return started

    def _end(self) -> None:
        self._started = None


_AT_EOF = StreamReader.at_eof.__code__
_PARSE = SansIOProtocol.parse.__code__


def _between_frames(conn: SansIOProtocol) -> bool:
    """Is websockets' frame parser waiting for the first byte of a frame, with nothing buffered?"""
    parser: Any = conn.parser
    if parser.gi_code is not _PARSE or conn.reader.buffer:
        return False
    inner = parser.gi_yieldfrom
    return inner is not None and inner.gi_code is _AT_EOF


# Request headers whose values repeat from one connection to the next. The scope holds each header as a
# tuple of two bytes objects (about 150 bytes), for the connection's life; equal ones are shared.
_SHARED_HEADER_NAMES = frozenset(
    (
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"connection",
        b"host",
        b"origin",
        b"pragma",
        b"sec-websocket-extensions",
        b"sec-websocket-version",
        b"upgrade",
        b"user-agent",
    )
)
# Bounds what clients can pin in the table: at most 1024 headers of at most 256 bytes (first come).
_SHARED_HEADERS_MAX = 1024
_SHARED_VALUE_MAX = 256
_shared_headers: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}


def share_common_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Replace, in place, each header of a repeating kind by an equal tuple shared with other
    connections (tuples and bytes are immutable: nothing can tell but ``is``)."""
    shared = _shared_headers
    for i, header in enumerate(headers):
        if header[0] not in _SHARED_HEADER_NAMES or len(header[1]) > _SHARED_VALUE_MAX:
            continue
        existing = shared.get(header)
        if existing is not None:
            headers[i] = existing
        elif len(shared) < _SHARED_HEADERS_MAX:
            shared[header] = header


MAX_BUFFERED_BYTES = 64 * 1024 * 1024
"""Bytes waiting to be sent past which a ping is answered by dropping the connection, when the app's
state carries no settings."""


def max_buffered_bytes(app_state: dict[str, Any] | None) -> int:
    """The app's ``send_queue_bytes`` setting (from its lifespan state), or ``MAX_BUFFERED_BYTES``."""
    settings = app_state.get("settings") if app_state else None
    return int(getattr(settings, "send_queue_bytes", MAX_BUFFERED_BYTES))


class CollabTransportBase:
    """What both our websocket protocols do for the ``collab.transport`` extension and against hostile
    clients (a mixin: the protocol sets the attributes listed here in its ``__init__``, and provides the
    ones annotated below and ``_app_tasks``)."""

    __slots__ = (
        "_frame_handler",
        "_ping_time",
        "_ping_tokens",
        "_resume",
        "_resume_queued",
        "_resume_task",
        "close_sent",
        "pending_ping_payload",
        "pong_timer",
        "read_paused",
    )

    _frame_handler: FrameHandler | None
    _resume_queued: bool
    _ping_time: float
    _ping_tokens: float
    _resume: Resume | None
    _resume_task: Task[None] | None
    close_sent: bool
    pending_ping_payload: bytes | None
    pong_timer: Any
    read_paused: bool

    # Provided by the protocol class.
    loop: AbstractEventLoop
    transport: Any
    queue: Any  # a ReceiveQueue
    client: tuple[str, int] | None
    close_timer: Any

    def _app_tasks(self) -> set[Task[None]]:
        """uvicorn's set of the server's app tasks (a graceful shutdown waits for them)."""
        raise NotImplementedError

    async def receive(self) -> Any:
        # uvicorn's receive(), with the queue's get() inlined: an idle connection's task waits on the
        # getter future itself, one coroutine frame fewer.
        queue = cast(ReceiveQueue, self.queue)
        while queue.empty():
            getter = queue.getter()
            try:
                await getter
            except BaseException:
                queue.getter_failed(getter)
                raise
        message = queue.get_nowait()
        if self.read_paused and queue.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def offer_frames(self, handler: FrameHandler | None) -> None:
        """From now on, offer each binary message to ``handler`` first (None: stop). See ``FrameHandler``."""
        self._frame_handler = handler

    def detach(self, resume: Resume) -> None:
        """Let the app's task end without ending the connection: ``resume`` takes over (see ``Resume``).

        Called by the app just before it returns. From then on, the connection costs no task while nothing
        waits for the app: what the frame handler takes never does, and anything queued (a frame it
        declined, the disconnect, the server's shutdown) starts ``resume`` in a task of its own, one at a
        time, until it returns False. Then the connection ends as if the app had returned then.
        """
        self._resume = resume
        queue = cast(ReceiveQueue, self.queue)
        queue.on_put = self._wake_app
        if not queue.empty():
            self._wake_app()

    def _gate(self) -> TurnGate | None:
        """The server's ``TurnGate``, or None to start every resume at once (the deflate protocol, which
        keeps no per-server state of ours to hold one)."""
        return None

    def _wake_app(self) -> None:
        # A running resume clears _resume_task as it ends; done() also covers one cancelled before it ran.
        task = self._resume_task
        if self._resume is None or self._resume_queued or (task is not None and not task.done()):
            return  # done with the connection, or the running (or queued) resume will see the new item
        gate = self._gate()
        if gate is None:
            self._start_resume()
            return
        # What waits here (frames the data callback left, a disconnect, the leave) can wait its turn: a
        # storm of them would otherwise start all its tasks in one turn.
        self._resume_queued = True
        gate.resume(self._start_resume, self.loop)

    def _start_resume(self) -> None:
        self._resume_queued = False
        if self._resume is None:
            return
        task = self._resume_task = self.loop.create_task(self._run_resume(self._resume))
        # In uvicorn's task set, so that a graceful shutdown waits for it as for an app's task.
        tasks = self._app_tasks()
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run_resume(self, resume: Resume) -> None:
        done = True
        try:
            done = not await resume(self.receive, self.queue.empty)
        except (ClientDisconnected, CancelledError):
            pass
        except BaseException:
            _logger.exception("Exception in ASGI application\n")
        finally:
            self._resume_task = None  # an idle connection keeps no finished task either
            if done:
                # As run_asgi() once the app returned; and no more resumes, which also breaks the reference
                # cycle connection -> resume -> peer -> connection.
                self._resume = None
                cast(ReceiveQueue, self.queue).on_put = None
                if self.close_timer is None:
                    self.transport.close()

    def _ping_refused(self, max_buffered: int) -> bool:
        """A ping arrived: True if it is refused, and the connection dropped, instead of answered. A client
        may ping ``PING_BURST`` times and then ``PING_RATE`` times a second, and only while it reads what it
        is sent: one that pings but never reads would otherwise grow the write buffer by a pong per ping."""
        now = self.loop.time()
        tokens = min(PING_BURST, self._ping_tokens + (now - self._ping_time) * PING_RATE) - 1
        self._ping_tokens, self._ping_time = tokens, now
        if tokens < 0:
            self._drop("ping_flood", f"more than {PING_RATE:g} pings per second")
            return True
        if self.transport.get_write_buffer_size() > max_buffered:
            self._drop("ping_flood", "pings while not reading what it is sent")
            return True
        return False

    def keepalive_timeout(self) -> None:
        """No pong within the keepalive timeout. uvicorn closes the socket here, which waits for the peer
        to read the close frame: a dead or stalled peer would keep the connection and its unsent buffer
        until TCP gives up. Drop it (a reset) instead."""
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self._drop("keepalive_timeout", "no pong within the keepalive timeout")

    def _drop(self, reason: str, text: str) -> None:
        metrics.CONNECTIONS_DROPPED.labels(reason).inc()
        log_refusal(reason, "dropped a connection from %s: %s", self.client[0] if self.client else "?", text)
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        self.reset()

    def reset(self) -> None:
        """Drop the connection with a TCP reset. A plain close would leave the kernel holding every
        unsent byte (megabytes, for a stalled reader) until the peer reads them or TCP gives up."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


STARTS_PER_TURN = 32
"""The most tasks a ``TurnGate`` starts per loop turn. The work of one (an app's join: access check,
admission, the room's join, the 101 and the sync request; or a detached connection's resume: the frames
its data callback left, or its leave) took 20-150 us on a fast machine and up to 300 us on a slow one."""
ARRIVALS_BUDGET = 0.002
"""How long the arrivals a ``TurnGate`` starts in one turn may take, with their tasks' first steps (the
poll's own reads, the frames of open rooms and the resumes come on top of it, in a turn that should stay
under 10 ms)."""
MIN_ARRIVALS_PER_TURN = 4
"""The fewest arrivals a ``TurnGate`` starts per turn however long they take, so that newcomers keep
coming in while the loop is busy with other work."""


class TurnGate:
    """Starts connections' tasks (a detached connection's resume; an arriving connection's app, or the parse
    of its request) at most ``per_turn`` per loop turn: at once while the turn has starts left and nothing
    waits, otherwise queued and started per turn by a drain task, resumes first, each kind in order. One
    per server.

    Why: each connection that arrives, is lost or has frames left over starts a task, and the tasks
    started in one poll all take their first step in the loop's next turn, together. The kernel hands
    the loop up to a thousand sockets in one poll, so when thousands of clients arrive at once (a replica
    taking over, a class at 9 a.m.) or leave at once (a network outage, a load balancer dropping its
    connections), turns grew to 14-60 ms: a stall of every room on the replica. Through the gate, the
    loop polls between every few dozen starts and serves the other rooms meanwhile; the waiting clients
    wait a few turns, a few milliseconds. Resumes go before arrivals: they carry the frames of rooms
    already open (and the leaves that give admissions back), which a storm of newcomers must not hold up.

    How many per turn: resumes, up to ``per_turn``. Arrivals fill the turn up to ``per_turn`` too, but only
    as many as fit in ``budget``: the tasks started in one turn take their first steps together in the
    next, so the drain times those steps (from a callback it queues just before starting them to its own
    next step, queued just after them), adds what the starts took themselves (an upgrade request's parse
    is done in its start), and scales the arrivals it starts next to fit, never fewer than
    ``MIN_ARRIVALS_PER_TURN``. A fixed 32 a turn kept turns within a few ms on a fast machine, and gave
    155-219 turns over 10 ms in a storm of 10,000 arrivals on a machine half as fast (31-42 with this
    budget: docs/benchmarks.md, session 17). Resumes are not held to it: they carry the frames of rooms
    already open, whose turns the gate is there to keep short, and the long turns of a mass leave are
    mostly uvloop closing the reset sockets, which fewer leaves a turn did not shorten.

    The drain task is in the server's task set: a graceful shutdown waits for it as it waits for the tasks
    it starts.
    """

    __slots__ = (
        "_allowance",
        "_arrivals",
        "_budget",
        "_clock",
        "_draining",
        "_marked",
        "_per_turn",
        "_resumes",
        "_started",
        "_tasks",
    )

    def __init__(
        self,
        tasks: set[Task[None]],
        per_turn: int = STARTS_PER_TURN,
        budget: float = ARRIVALS_BUDGET,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._tasks = tasks
        self._per_turn = per_turn
        self._budget = budget
        self._clock = clock
        self._allowance = per_turn  # arrivals per turn now: per_turn until they take longer than budget
        self._marked = 0.0  # when the steps of the tasks the drain started last began
        self._started = 0  # started in this turn
        self._resumes: deque[Callable[[], None]] = deque()
        self._arrivals: deque[Callable[[], None]] = deque()
        self._draining: Task[None] | None = None

    def __len__(self) -> int:
        return len(self._resumes) + len(self._arrivals)

    def resume(self, start: Callable[[], None], loop: AbstractEventLoop) -> None:
        """Call ``start`` (which starts a detached connection's resume) now, or in a later turn of
        ``loop``, before any arrival that waits."""
        self._add(self._resumes, start, loop, self._per_turn)

    def arrive(self, start: Callable[[], None], loop: AbstractEventLoop) -> None:
        """Call ``start`` (which starts an arriving connection's app, or parses its request) now, or in a
        later turn of ``loop`` once the resumes that wait have started."""
        self._add(self._arrivals, start, loop, self._allowance)

    def _add(
        self, queue: deque[Callable[[], None]], start: Callable[[], None], loop: AbstractEventLoop, limit: int
    ) -> None:
        if not self._resumes and not self._arrivals and self._started < limit:
            self._count(1, loop)
            start()
            return
        queue.append(start)
        if self._draining is None:
            task = self._draining = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _count(self, starts: int, loop: AbstractEventLoop) -> None:
        if not self._started:
            loop.call_soon(self._new_turn)  # ready callbacks run after this poll's I/O callbacks
        self._started += starts

    def _new_turn(self) -> None:
        self._started = 0

    async def _drain(self) -> None:
        loop = get_running_loop()
        try:
            while self._resumes or self._arrivals:
                resumes = min(self._per_turn, len(self._resumes))
                arrivals = min(len(self._arrivals), self._allowance, self._per_turn - resumes)
                self._count(resumes + arrivals, loop)
                loop.call_soon(self._mark)
                began = self._clock()
                for _ in range(resumes):
                    self._resumes.popleft()()
                for _ in range(arrivals):
                    self._arrivals.popleft()()
                ran = self._clock() - began  # a start may do its work at once (an upgrade request's parse)
                # The tasks just started take their first step in the next turn, after the mark and before
                # this task's next step.
                await sleep(0)
                if arrivals:
                    self._fit(resumes + arrivals, ran + self._clock() - self._marked)
        finally:
            self._draining = None

    def _mark(self) -> None:
        self._marked = self._clock()

    def _fit(self, starts: int, took: float) -> None:
        """Scale the arrivals per turn to what ``starts`` took, with their tasks' first steps."""
        fitting = self._per_turn if took <= 0 else round(starts * self._budget / took)
        self._allowance = max(min(MIN_ARRIVALS_PER_TURN, self._per_turn), min(fitting, self._per_turn))


class CollabWebSocketProtocol(CollabTransportBase, WebSocketsSansIOProtocol):
    # Every attribute uvicorn's protocol sets (those CollabTransportBase has not): in slots they cost 8
    # bytes each, where 37 of them would overflow CPython's shared-key instance dict into a 1.6 KB dict per
    # connection. An attribute a later uvicorn adds still works: it lands in the (then materialised)
    # instance dict.
    __slots__ = (
        # ours: when the current read began (see offer_frames)
        "_read_at",
        # uvicorn's
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "queue",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Same interfaces, nothing held while idle (see the module docstring).
        self.queue = ReceiveQueue(self.loop)
        self.writable = WritableFlag()  # type: ignore[assignment]
        self.writable.set()
        self._ping_tokens = float(PING_BURST)
        self._ping_time = 0.0
        self._frame_handler: FrameHandler | None = None
        self._read_at = 0.0
        self._resume: Resume | None = None
        self._resume_task: Task[None] | None = None
        self._resume_queued = False

    def _app_tasks(self) -> set[Task[None]]:
        return self.tasks

    def start_keepalive(self) -> None:
        # Called once, right after the 101 response went out: the handshake is complete.
        super().start_keepalive()
        self._release_handshake()

    def schedule_ping(self) -> None:
        # uvicorn's schedule_ping(), on the shared keepalive timers instead of a loop timer of its own.
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = keepalive_timers(self.loop).call_later(  # type: ignore[assignment]
            self.loop, delay, self.send_keepalive_ping
        )

    def _release_handshake(self) -> None:
        """Drop what only the opening handshake needed. The ASGI scope has its own copy of the headers."""
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        # websockets' ServerProtocol.parse() keeps the Request in a local of its parser generator for the
        # connection's life. If that generator now waits for the first frame with nothing read (always,
        # unless a client sent frames before seeing the 101), restart it as the bare frame parser, which
        # is what it would run from here on anyway.
        conn = self.conn
        if conn.state is not State.OPEN or conn.reader.buffer or conn.reader.eof:
            return
        inner: Any = conn.parser
        while inner.gi_yieldfrom is not None:
            inner = inner.gi_yieldfrom
        if inner.gi_code is not _AT_EOF:
            return
        parser = SansIOProtocol.parse(conn)
        next(parser)  # runs to the same point: waiting in reader.at_eof()
        conn.parser = parser

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The ASGI task was created but has not run yet, so the scope can still be extended.
        scope = getattr(self, "scope", None)
        if scope is not None:
            share_common_headers(scope["headers"])
            scope["extensions"][TRANSPORT_EXTENSION] = self  # a CollabTransport

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # The scope's extension holds this protocol, which holds the scope: a reference
        # cycle that only the cyclic GC could free, and a closed connection should go by reference counts
        # alone (``collab_server.gc_policy``). The app took what it needed from the extension when it joined.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(TRANSPORT_EXTENSION, None)
        self._frame_handler = None  # the same kind of cycle: handler -> peer -> send_nowait -> protocol
        # And websockets' own: its parser is a generator whose frame holds the ServerProtocol that holds the
        # generator, suspended for good (even after EOF, discard() waits at a last yield). Unbroken, every
        # closed connection's ServerProtocol, reader and buffers wait for a full collection: what made the
        # soak's server grow with larger GC thresholds, and frozen objects pile up with collect-and-freeze.
        # Nothing is parsed after the connection is lost: close the generator.
        self.conn.parser.close()

    async def run_asgi(self) -> None:
        # uvicorn's run_asgi(), except that a connection the app detached stays open when the app returns.
        failed = False
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
            failed = True
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
                failed = True
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self._resume is not None:
            # Detached: the scope (2 KB with its headers, and the app's copies of it) goes with the task.
            self.scope = None  # type: ignore[assignment]
            if not failed:
                return
            # The app failed after detaching: the connection closes, and the disconnect runs its resume.
        if self.close_timer is None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._read_at = self.loop.time()
        if self._frame_handler is not None:
            data = self._take_whole_frames(data)
            if not data:
                return
        super().data_received(data)

    def _take_whole_frames(self, data: bytes) -> bytes:
        """Hand the complete binary frames at the start of ``data`` to the frame handler without websockets'
        parser, and return what is left for it: from the first frame that is anything else (a control,
        text or fragmented frame, one cut off by the end of the read, one over the size limit, one with
        reserved bits or without a mask), websockets parses and judges as always.

        websockets' parser is a generator in pure Python: per frame it cost more than everything else the
        server does with a small update (docs/benchmarks.md). Only used while that parser sits between two
        frames with nothing buffered, the connection is open, no extension is negotiated and no fragmented
        message is in progress, so that skipping it for a whole frame leaves it exactly where it was.
        """
        conn = self.conn
        if (
            conn.state is not State.OPEN
            or conn.extensions
            or conn.current_size is not None
            or self.close_sent
            or not self.queue.empty()
            or not _between_frames(conn)
        ):
            return data
        handler = self._frame_handler
        limit = conn.max_message_size
        size = len(data)
        start = 0
        while size - start >= 6:
            if self.close_sent:
                # The handler had the connection dropped: websockets takes the rest (it still answers a
                # close, and uvicorn discards the messages).
                break
            # FIN + binary opcode, no reserved bits; the client's mask bit set (RFC 6455 5.2).
            if data[start] != _FIN_BINARY or not data[start + 1] & 0x80:
                break
            length = data[start + 1] & 0x7F
            header = 2
            if length == 126:
                header, length = 4, int.from_bytes(data[start + 2 : start + 4], "big")
            elif length == 127:
                header, length = 10, int.from_bytes(data[start + 2 : start + 10], "big")
            end = start + header + 4 + length
            if end > size or (limit is not None and length > limit):
                break
            mask = data[start + header : start + header + 4]
            payload = apply_mask(data[start + header + 4 : end], mask)
            start = end
            if handler is None or not handler(payload, self._read_at):
                # Declined (or the handler dropped itself): queued for the app's task, as uvicorn does
                # with every message; websockets parses the rest of this read.
                self.curr_msg_data_type = "bytes"
                self.frames = [payload]
                WebSocketsSansIOProtocol.send_receive_event_to_app(self)
                break
            handler = self._frame_handler
        return data[start:] if start else data

    def send_receive_event_to_app(self) -> None:
        # uvicorn queues each message for the app's task and pauses reading until the task took it. A
        # binary message that the frame handler takes needs neither: it is handled in this callback.
        handler = self._frame_handler
        if handler is not None and self.curr_msg_data_type == "bytes" and not self.close_sent and self.queue.empty():
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            if handler(data, self._read_at):
                self.frames = []
                return
            self.frames = [data]  # declined: queued for the task as uvicorn would
        super().send_receive_event_to_app()

    def handle_ping(self) -> None:
        # websockets queued the pong already; write it only while the peer reads what it is sent, and
        # sends pings at a sane rate.
        if self._ping_refused(self._max_buffered()):
            self.conn.data_to_send()  # discard the pong
            return
        super().handle_ping()

    def _max_buffered(self) -> int:
        return max_buffered_bytes(self.app_state)

    def send_nowait(self, data: bytes, frame: bytes | None = None) -> bool:
        """Write one binary message if the socket can take it now; False means "use the ASGI send"."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
        ):
            return False
        if self.conn.extensions:
            # permessage-deflate: websockets must compress the payload
            self.conn.send_binary(data)
            self.transport.writelines(self.conn.data_to_send())
        elif frame is not None:
            self.transport.write(frame)
        else:
            # Header and payload as two buffers: the payload, shared by every peer of a broadcast, is
            # never copied into a per-peer frame.
            self.transport.writelines((binary_frame_header(len(data)), data))
        return True
