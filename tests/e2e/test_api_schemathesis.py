"""The whole REST API, property-based from its own OpenAPI document (schemathesis), against a real
server process: no 500s, and every response matches the schema the document gives it.

The schema is generated from the same operations the server serves (and the test checks that the
server's /openapi.json is that document). The server runs without authentication, so every operation
can go past the authorization step; half the cases that name a room name one that exists.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from collab_server.api.openapi import openapi_document
from collab_server.api.operations import api
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e

DOCUMENT = openapi_document(api.operations)
schema = schemathesis.openapi.from_dict(DOCUMENT)
EXAMPLES = 150
# Bytes no schema can tell apart from a Yjs update or state vector, and record patches that break a rule
# of content (an id twice, a number beyond 2^53): refused for what they hold (400 with one of these codes),
# which is not a schema-valid request rejected.
CONTENT_ERRORS = {"malformed_update", "invalid_state_vector", "invalid_patch", "too_deep", "update_refused"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("schemathesis")
    process = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": "memory://",
            "COLLAB_BCRYPT_COST": "4",
            "COLLAB_JOIN_ATTEMPTS": "1000000",
            "COLLAB_LOG_LEVEL": "warning",
        },
        log_path=directory / "server.log",
    ).start()
    yield process
    process.stop()


def test_the_served_document_is_the_generated_one(server: ServerProcess) -> None:
    served = httpx.get(f"{server.http}/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT
    assert served.json()["openapi"] == "3.1.0"


def existing_room(server: ServerProcess) -> str:
    response = httpx.post(f"{server.http}/api/rooms", json={"name": "fuzz", "password": "pw"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api(case: Any, server: ServerProcess) -> None:
    if "room_id" in (case.path_parameters or {}) and random.Random(repr(case.path_parameters)).random() < 0.5:
        case.path_parameters["room_id"] = existing_room(server)
    response = case.call(base_url=server.http, timeout=10)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    # 413 refuses a body over the server's size limit: a rejection schemathesis does not count as one.
    excluded = [schemathesis.checks.negative_data_rejection] if response.status_code == 413 else []
    if response.status_code == 400 and response.json().get("error") in CONTENT_ERRORS:  # our errors are JSON
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)
