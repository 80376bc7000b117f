from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess


@pytest.fixture
def room_name() -> str:
    """A unique room per test, so tests never see each other's documents."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[ServerProcess]]:
    """Start real servers: ``server_factory({"COLLAB_DATABASE_URL": ...})``; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, *, port: int | None = None) -> ServerProcess:
        env = {"COLLAB_DATABASE_URL": f"sqlite:///{tmp_path}/collab.sqlite3", "COLLAB_ROOM_GRACE": "1", **(env or {})}
        server = ServerProcess(env=env, log_path=tmp_path / f"server-{len(started)}.log")
        if port is not None:
            server.port = port
        started.append(server)
        return server.start()

    yield start  # type: ignore[misc]
    for server in started:
        server.stop()
