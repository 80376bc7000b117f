"""End-to-end fixtures: a real server process and a Node process hosting real Yjs clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on SQLite shared by a module's tests (each test uses its own rooms)."""
    directory = tmp_path_factory.mktemp("server")
    process = ServerProcess(
        env={
            "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
            "COLLAB_ROOM_GRACE": "0.5",
            # small limits so that the protection tests trip them quickly
            "COLLAB_MAX_MESSAGE_BYTES": str(4 * 1024 * 1024),
            "COLLAB_SEND_QUEUE_MESSAGES": "64",
            "COLLAB_SEND_QUEUE_BYTES": str(1024 * 1024),
        },
        log_path=directory / "server.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def node() -> AsyncIterator[YjsNode]:
    async with YjsNode() as running:
        yield running
