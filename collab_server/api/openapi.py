"""The OpenAPI 3.1 document, generated from the operations and the pydantic models that validate them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from collab_server import __version__
from collab_server.api.errors import ERROR_STATUSES
from collab_server.api.operations import PATH_PARAMETERS, Operation
from collab_server.api.schema import Error

_REF = "#/components/schemas/{model}"
_DESCRIPTIONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Malformed request (e.g. not JSON)",
    401: "No token, or a malformed, badly signed or expired one", 403: "Not allowed",
    404: "No such room (or a private room the caller may not see)", 409: "Conflicts with the current state",
    413: "Request body too large", 415: "Unsupported Content-Type", 422: "Invalid body or parameters",
    429: "Too many attempts (see Retry-After)",
    503: "The store or the identity provider is unreachable right now (see Retry-After)",
}


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": op.tags,
            "parameters": _parameters(op),
            "responses": _responses(op, refs),
        }
        if op.request_content is not None:
            entry["requestBody"] = {"required": True, "content": op.request_content}
        elif op.body is not None:
            # A missing body is read as {}: it is required only where the model has required fields.
            entry["requestBody"] = {
                "required": _body_required(op.body),
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if not op.public:
            entry["security"] = [{"bearer": []}, {}]
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "collab-server",
            "version": __version__,
            "description": "Rooms and access of a Yjs collaboration server. Errors are "
            '`{"error": code, "detail": ...}`.',
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _body_required(model: type[BaseModel]) -> bool:
    schema = model.model_json_schema()
    return bool(schema.get("required")) or "anyOf" in schema


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in PATH_PARAMETERS
        if "{" + name + "}" in op.path
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = {key: value for key, value in prop.items() if key != "title"}
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return parameters


def _responses(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _DESCRIPTIONS.get(op.status, "OK")}
    if op.response_content is not None:
        success["content"] = op.response_content
    elif op.response is not None:
        success["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
    responses = {str(op.status): success}
    error = {"application/json": {"schema": refs[(Error, "serialization")]}}
    for status in sorted({*ERROR_STATUSES, *op.errors}):
        responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": error}
    return responses
