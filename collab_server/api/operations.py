"""REST operations declared once: method, path, models, summary. From one declaration come the Starlette
route that validates the request (``Operation.endpoint``) and the OpenAPI entry (``api.openapi``)."""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab_server.api.errors import response_for
from collab_server.errors import NotFound, RoomNotFound
from collab_server.websocket import room_name_problem

M = TypeVar("M", bound=BaseModel)

# Path parameters and their schema; a value that breaks it answers 404 (there is no such resource).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "room_id": {"type": "string", "minLength": 1, "maxLength": 512, "description": "the room's id (/ws/{room_id})"},
    "user": {"type": "string", "minLength": 1, "maxLength": 256, "description": "a user id (a token's sub)"},
    "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "description": "a version number"},
}


@dataclass
class Call:
    """One validated request, as a handler sees it."""

    request: Request
    path: dict[str, str]
    body: BaseModel | None = None
    query: BaseModel | None = None

    def body_as(self, model: type[M]) -> M:
        assert isinstance(self.body, model)
        return self.body

    def query_as(self, model: type[M]) -> M:
        assert isinstance(self.query, model)
        return self.query


Handler = Callable[[Call], Awaitable[Response]]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False
    tags: list[str] = field(default_factory=lambda: ["rooms"])
    # For handlers that read the body or build the response themselves (binary documents): the OpenAPI
    # ``content`` of each, and error statuses beyond the common ones (e.g. 415).
    request_content: dict[str, Any] | None = None
    response_content: dict[str, Any] | None = None
    errors: tuple[int, ...] = ()

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    async def endpoint(self, request: Request) -> Response:
        try:
            path = dict(request.path_params)
            for name, value in path.items():
                if name == "room_id":  # one spelling per room, as on the websocket (collab_server.names)
                    path[name] = value = unicodedata.normalize("NFC", value)
                limit = PATH_PARAMETERS.get(name, {}).get("maxLength", 512)
                if len(value) > limit or (name == "room_id" and room_name_problem(value) is not None):
                    raise RoomNotFound("no such room")
                if name == "version" and not (value.isdigit() and 1 <= int(value) < 2**31):
                    raise NotFound(f"no version {value!r}")
            call = Call(request, path)
            if self.query is not None:
                call.query = self.query.model_validate(dict(request.query_params))
            if self.body is not None:
                call.body = self.body.model_validate_json(await request.body() or b"{}")
            return await self.handler(call)
        except Exception as exc:
            return response_for(request, exc)



class Api:
    """The list of operations; modules add theirs with the ``operation`` decorator."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def operation(self, method: str, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, handler, summary, **options))
            return handler

        return register

    def routes(self) -> list[Route]:
        """One route per path, dispatching on the method: a wrong method then answers 405 with an
        ``Allow`` header that lists every method of the path."""
        by_path: dict[str, dict[str, Operation]] = {}
        for op in self.operations:
            by_path.setdefault(op.path, {})[op.method] = op
        return [_route(path, operations) for path, operations in by_path.items()]


def _route(path: str, operations: dict[str, Operation]) -> Route:
    async def endpoint(request: Request) -> Response:
        return await operations[request.method].endpoint(request)

    return Route(path, endpoint, methods=list(operations), name="|".join(op.operation_id for op in operations.values()))


api = Api()
"""Every operation of the REST API; modules under collab_server.api add theirs with ``api.operation``."""


def json_response(model: BaseModel, status: int = 200) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)
