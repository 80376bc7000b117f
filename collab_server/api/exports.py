"""REST routes of exports: request one, read its status (with a fresh download URL), list a room's.

    POST /api/rooms/{room}/exports        {"format": "png", "options": {...}}  -> 202 the job
    GET  /api/rooms/{room}/exports        the room's recent exports, newest first
    GET  /api/exports/{id}                one export; ``url`` once completed
    GET  /api/exports/{id}/download       302 to that URL (``curl -L`` friendly)
    GET  /api/blobs/{key}?expires&signature   the file, for the folder blob store's signed links

Access: whoever may read a room may export it and see its exports. The routes ask a ``RoomAccess`` (the
access layer's ``require_room``); ``OpenAccess`` lets every caller read every room (auth off). The room
in the path is percent-decoded, so ``team%2Fplan`` is the room ``team/plan``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from collab_server.api.errors import response_for
from collab_server.errors import CollabError
from exports.blobs_file import FileBlobStore, SignatureError
from exports.errors import InvalidExportRequest
from exports.service import ExportService

READ = "viewer"
"""The role an export needs (the access layer's Role.VIEWER: anyone who may read the room)."""


class RoomAccess(Protocol):
    """The access layer's check (issue 9): the room record and principal, or AuthError / RoomNotFound."""

    async def require_room(self, request: Request, room_id: str, need: Any) -> tuple[Any, Any]: ...


class OpenAccess:
    """Every caller may read every room: for mounting these routes alone, in tests."""

    async def require_room(self, request: Request, room_id: str, need: Any) -> tuple[Any, Any]:
        return None, None


class AccessCheck:
    """The access layer's ``require_room``: whoever may read the room (viewer or more) may export it."""

    async def require_room(self, request: Request, room_id: str, need: Any) -> tuple[Any, Any]:
        from collab_server.api.auth import require_room
        from collab_server.roles import Role

        granted = await require_room(request, room_id, Role(need))
        return granted.record, granted.principal


def principal_id(principal: Any) -> str | None:
    for attribute in ("sub", "id", "name"):
        value = getattr(principal, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def export_routes(access: RoomAccess, *, max_body_bytes: int = 16 * 1024) -> list[Route]:
    """The routes, checking rooms with ``access``. They read ``request.state.exports`` (ExportService)."""

    async def create(request: Request) -> Response:
        room = request.path_params["room"]
        try:
            _, principal = await access.require_room(request, room, READ)
            raw = await request.body()
            if len(raw) > max_body_bytes:
                raise InvalidExportRequest(f"the request body is over {max_body_bytes} bytes")
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                raise InvalidExportRequest("the body is not JSON") from None
            service: ExportService = request.state.exports
            job = await service.request(room, body, requested_by=principal_id(principal))
            return JSONResponse(await service.describe(job), status_code=202,
                                headers={"Location": f"/api/exports/{job.id}"})
        except CollabError as exc:
            return response_for(request, exc)

    async def listing(request: Request) -> Response:
        room = request.path_params["room"]
        try:
            await access.require_room(request, room, READ)
            service: ExportService = request.state.exports
            limit = _limit(request.query_params.get("limit"))
            jobs = await service.list(room, limit=limit)
            return JSONResponse({"exports": [await service.describe(job) for job in jobs]})
        except CollabError as exc:
            return response_for(request, exc)

    async def status(request: Request) -> Response:
        try:
            service: ExportService = request.state.exports
            job = await service.get(request.path_params["id"])
            await access.require_room(request, job.room, READ)
            return JSONResponse(await service.describe(job))
        except CollabError as exc:
            return response_for(request, exc)

    async def download(request: Request) -> Response:
        try:
            service: ExportService = request.state.exports
            job = await service.get(request.path_params["id"])
            await access.require_room(request, job.room, READ)
            url = (await service.describe(job))["url"]
            if url is None:
                return JSONResponse({"error": "not_ready", "detail": f"the export is {job.status.value}"},
                                    status_code=409)
            return RedirectResponse(url, status_code=302)
        except CollabError as exc:
            return response_for(request, exc)

    return [
        Route("/api/rooms/{room:path}/exports", create, methods=["POST"]),
        Route("/api/rooms/{room:path}/exports", listing, methods=["GET"]),
        Route("/api/exports/{id}", status, methods=["GET"]),
        Route("/api/exports/{id}/download", download, methods=["GET"]),
        Route("/api/blobs/{key:path}", blob_download, methods=["GET"]),
    ]


async def blob_download(request: Request) -> Response:
    """A file of the folder blob store, behind its signed, expiring link (no other access check: the
    signature is the permission, minted for someone who could read the room)."""
    service: ExportService = request.state.exports
    blobs = service.blobs
    if not isinstance(blobs, FileBlobStore):
        return JSONResponse({"error": "not_found", "detail": "downloads come from the object store"}, status_code=404)
    try:
        path, content_type, filename = blobs.verify(
            request.path_params["key"], request.query_params.get("expires", ""),
            request.query_params.get("signature", ""),
        )
    except SignatureError as exc:
        return JSONResponse({"error": "forbidden", "detail": str(exc)}, status_code=403)
    if not path.is_file():
        return JSONResponse({"error": "not_found", "detail": "the file is gone"}, status_code=404)
    return FileResponse(path, media_type=content_type, filename=filename)


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        value = int(raw)
    except ValueError:
        raise InvalidExportRequest("limit must be a number") from None
    if not 1 <= value <= 100:
        raise InvalidExportRequest("limit must be between 1 and 100")
    return value


def standalone_app(service: ExportService, access: RoomAccess | None = None) -> Any:
    """The export routes as an ASGI app of their own, with ``service`` in ``request.state`` (tests)."""
    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

    inner = Starlette(routes=export_routes(access or OpenAccess()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["state"] = {**scope.get("state", {}), "exports": service}
        await inner(scope, receive, send)

    return app
