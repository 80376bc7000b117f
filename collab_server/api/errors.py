"""The one mapping from the server's errors to REST responses: ``{"error": code, "detail": ...}``.

Handlers raise the server's own errors (collab_server.errors); nothing else in the API builds an error
response. Validation problems list where and what, never the offending value (it may be a password).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from collab_server.errors import (
    AuthError,
    AuthUnavailable,
    BrokerError,
    CollabError,
    DocumentError,
    Forbidden,
    RateLimited,
    RequestError,
    RoomNotFound,
    StoreError,
)
from collab_server.security import security_event

logger = logging.getLogger(__name__)

# Every status an API operation may answer with besides its success, as documented in OpenAPI.
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503)

# DocumentError codes (collab_server.documents, the document routes) and their statuses; others are 400.
DOCUMENT_STATUSES = {
    "too_large": 413,
    "document_too_large": 422,  # the stored document is too large to read as JSON (format=update works)
    "not_tldraw": 409,
    "type_conflict": 409,
    "unsupported": 422,
    "unprocessable": 422,
    "internal": 500,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def error_response(status: int, code: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def response_for(request: Request, exc: Exception) -> Response:
    """The response for ``exc`` raised while handling ``request``."""
    room = request.path_params.get("room_id")
    if isinstance(exc, ValidationError):
        problems = [
            {"loc": [str(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        if any(problem["type"] == "json_invalid" for problem in problems):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        return error_response(422, "invalid_request", problems)
    if isinstance(exc, RateLimited):
        security_event("rate_limited", str(exc), room=room, client=_client(request))
        return error_response(429, "rate_limited", str(exc), {"Retry-After": str(int(exc.retry_after + 0.999))})
    if isinstance(exc, AuthUnavailable):
        return error_response(503, "auth_unavailable", str(exc), {"Retry-After": "1"})
    if isinstance(exc, Forbidden):
        security_event("forbidden", str(exc), room=room, client=_client(request))
        return error_response(403, "forbidden", str(exc))
    if isinstance(exc, AuthError):
        security_event("unauthenticated", str(exc), room=room, client=_client(request))
        return error_response(401, "unauthenticated", str(exc), {"WWW-Authenticate": "Bearer"})
    if isinstance(exc, RoomNotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, RequestError):
        return error_response(exc.status, exc.code, str(exc))
    if isinstance(exc, DocumentError):
        status = DOCUMENT_STATUSES.get(exc.code, 400)
        if status >= 500:
            logger.error("%s %s: document logic failed: %s", request.method, request.url.path, exc.detail)
            return error_response(status, "internal_error", "internal error")
        return error_response(status, exc.code, exc.detail)
    if isinstance(exc, BrokerError):
        return error_response(503, "broker_unavailable", "presence cannot be read right now", {"Retry-After": "1"})
    if isinstance(exc, StoreError):
        logger.error("%s %s: store failed: %s", request.method, request.url.path, exc)
        return error_response(503, "store_unavailable", "the store cannot be reached right now", {"Retry-After": "1"})
    if isinstance(exc, CollabError):
        return error_response(400, "bad_request", str(exc))
    logger.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in the same shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    return error_response(status, _HTTP_CODES.get(status, "error"), getattr(exc, "detail", None), headers)
