"""The REST API under ``/api``, and its OpenAPI document at ``/openapi.json``.

Modules declare operations on the one ``Api`` (``collab_server.api.operations.api``); importing them here
registers them. Handlers authorize with ``collab_server.api.auth.require_room`` and raise the server's
errors, which ``collab_server.api.errors`` maps to ``{"error": code, "detail": ...}`` responses.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab_server.api import documents as _documents  # noqa: F401  (registers its operations)
from collab_server.api import members as _members  # noqa: F401
from collab_server.api import rooms as _rooms  # noqa: F401
from collab_server.api import versions as _versions  # noqa: F401
from collab_server.api.documents import DOCUMENT_PATH
from collab_server.api.http import HttpProtection
from collab_server.api.openapi import openapi_document
from collab_server.api.operations import api
from collab_server.settings import Settings


def api_routes() -> list[BaseRoute]:
    document = openapi_document(api.operations)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    routes: list[BaseRoute] = [*api.routes(), Route("/openapi.json", openapi_json, methods=["GET"])]
    return routes


def api_middleware(settings: Settings) -> list[Middleware]:
    """HTTP middleware: CORS (only for the configured origins), body limit, security headers."""
    middleware = [
        Middleware(
            HttpProtection,
            max_body_bytes=settings.max_body_bytes,
            large_body_bytes=settings.document_max_bytes,
            large_body_path=DOCUMENT_PATH,
        )
    ]
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if origins:
        options: dict[str, Any] = {
            "allow_origins": origins,
            "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
            "allow_headers": ["authorization", "content-type"],
            "max_age": 600,
        }
        middleware.append(Middleware(CORSMiddleware, **options))
    return middleware
