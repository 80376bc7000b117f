"""The composition root: ``create_app`` wires settings, store, writer and rooms into a Starlette app.

Everything is built in the lifespan (nothing in module globals), so tests can pass their own store and
run several apps in one process.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from collab_server.access_setup import open_access
from collab_server.admission import Admission
from collab_server.api import api_middleware, api_routes
from collab_server.api.errors import http_exception
from collab_server.api.exports import AccessCheck, export_routes
from collab_server.crdt.pool import WorkerPool
from collab_server.limits import Quotas
from collab_server.looplag import LoopLagMonitor
from collab_server.replication import Replication
from collab_server.room_control import RoomControl
from collab_server.room_documents import RoomDocuments, document_limits
from collab_server.rooms import RoomManager
from collab_server.settings import Settings
from collab_server.websocket import room_endpoint
from exports.wiring import open_exports
from persistence.base import DocumentStore, UpdateWriter
from persistence.factory import open_document_store
from persistence.room_store import RoomStore
from persistence.writer import AppendWriter
from presence.factory import open_replication

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    store: DocumentStore | None = None,
    replication: Replication | None = None,
    room_store: RoomStore | None = None,
) -> Starlette:
    """Build the ASGI app: the one place where the server's parts are chosen and wired together.

    Every part is built in the lifespan, in dependency order, on one ``AsyncExitStack`` that closes them
    in reverse order at shutdown. A part passed in (tests: ``store``, ``replication``, ``room_store``) is used as
    given and left open: its owner closes it.
    """
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            stack.callback(_log_shutdown)  # registered first, so it runs last
            # Access first: a server that must not start open refuses before it opens anything else.
            access_parts = await open_access(settings, rooms=room_store)
            if room_store is None:
                stack.push_async_callback(access_parts.access.rooms.close)
            document_store = store
            if document_store is None:
                document_store = await open_document_store(settings)
                stack.push_async_callback(document_store.close)
            # Documents live in worker processes: this process never runs the CRDT library (collab_server.crdt).
            engine = await WorkerPool(
                settings.crdt_workers,
                document_workers=settings.document_workers,
                deadline=settings.crdt_deadline,
                poison_ttl=settings.poison_ttl,
                nice=settings.crdt_worker_nice,
                fresh_sync_bytes=settings.fresh_sync_bytes,
                large_room_bytes=settings.large_room_bytes,
                large_room_workers=settings.large_room_workers,
                idle_document_seconds=settings.idle_document_seconds,
            ).start()
            stack.push_async_callback(engine.close)
            writer = AppendWriter(
                document_store,
                window=settings.commit_window_ms / 1000,
                batch=settings.commit_batch,
                max_buffer_bytes=settings.write_buffer_bytes,
            )
            writer.start()
            stack.push_async_callback(writer.close, timeout=settings.shutdown_timeout)
            # The broker backend is picked from settings.broker_url and imported only then (presence.factory).
            fanout = replication if replication is not None else await open_replication(settings, writer=writer)
            stack.push_async_callback(fanout.close)
            rooms = RoomManager(document_store, writer, settings, fanout, engine=engine)
            engine.attach(rooms)
            # Closed first: every room is flushed through the writer before the writer and store close.
            stack.push_async_callback(_close_rooms, rooms)
            logger.info("store: %s", document_store.describe())
            logger.info("documents: %s", engine.describe())
            logger.info("broker: %s; replica id %s", fanout.describe(), settings.replica_id)
            logger.info("rooms at ws://%s:%d/ws/{room}", settings.host, settings.port)
            # Export jobs: the queue and blob store, and in the embedded default a worker in this process.
            exports = await open_exports(settings, document_store)
            stack.push_async_callback(exports.close, timeout=settings.shutdown_timeout)
            control = RoomControl(
                access_parts.access, rooms, document_store, writer, access_parts.events,
                on_deleted=exports.service.room_deleted,
            )
            await control.start()
            stack.push_async_callback(control.close)
            # The loop's lag while the app serves: from here until shutdown begins. Start-up (stores opened,
            # workers spawned) runs before any client can connect, and its turns stall nobody.
            stack.callback(LoopLagMonitor().start().close)
            yield {
                "settings": settings,
                "store": document_store,
                "writer": writer,
                "rooms": rooms,
                # Rates and quotas shared by every socket (collab_server.limits).
                "quotas": Quotas.from_settings(settings),
                # Caps on room sockets: per replica, waiting to join, per client address (collab_server.admission).
                "admission": Admission.from_settings(settings),
                "presence": fanout.presence,
                "access": access_parts.access,
                "room_control": control,
                "join_limiter": access_parts.limiter,
                "exports": exports.service,
                "documents": RoomDocuments(rooms, document_store, writer, document_limits(settings)),
            }

    return CollabApp(
        routes=[
            WebSocketRoute("/ws/{room:path}", room_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            *api_routes(),
            *export_routes(AccessCheck()),
        ],
        middleware=api_middleware(settings),
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )


def _log_shutdown() -> None:
    # Child processes (CRDT workers, the export renderer) are counted once they have exited and been
    # waited for, which they have by now.
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    logger.info(
        "shutdown complete (CPU seconds: this process %.1f, child processes %.1f)",
        own.ru_utime + own.ru_stime,
        children.ru_utime + children.ru_stime,
    )


async def _close_rooms(rooms: RoomManager) -> None:
    saved = await rooms.close()
    logger.info("shutdown: %d rooms saved", saved)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready while the store takes writes; a load balancer should stop sending new peers otherwise."""
    writer: UpdateWriter = request.state.writer
    body = {"store": "ok" if writer.healthy else "failing", "pending_updates": writer.pending}
    return JSONResponse(body, status_code=200 if writer.healthy else 503)


async def metrics_endpoint(request: Request) -> Response:
    # Rendering reads every series and counts the process's open descriptors (a listing of /proc/self/fd:
    # 10,000 entries with 10,000 sockets open), about 20 ms on the loop there: a stall of every room at
    # every scrape. In a thread, the loop runs between the thread's turns with the GIL instead.
    body = await asyncio.to_thread(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROOM_PREFIX = "/ws/"


class CollabApp(Starlette):
    """Starlette, except that a room socket goes straight to its endpoint.

    Through the middleware stack and the router, an idle connection's task would hold ten more coroutine
    frames (ServerErrorMiddleware, ExceptionMiddleware, Router, WebSocketRoute, ...) and a second WebSocket
    object for its whole life: a third of what an idle peer costs in all (docs/benchmarks.md). Room
    sockets therefore get no Starlette middleware: anything that must see them (authentication) belongs
    in ``room_endpoint``. The route is still declared, so it is documented and
    reachable the ordinary way too.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path: str = scope["path"][len(scope.get("root_path", "")) :]
            if path.startswith(ROOM_PREFIX):
                scope["app"] = self
                scope["path_params"] = {"room": path[len(ROOM_PREFIX) :]}
                await room_endpoint(WebSocket(scope, receive, send))
                return
        await super().__call__(scope, receive, send)
