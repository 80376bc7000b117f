"""A bounded fuzz run: tens of thousands of hostile frames while a real client keeps writing.

Measured: no edit of the real client is lost (live, and after a restart), no stored room fails to load,
and the server process never goes down (it answers /healthz after the run; the writer was never cut off).
The long version is ``bench/fuzz.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.eventually import eventually
from tests.support.fuzz import fuzz
from tests.support.servers import REPO, ServerProcess
from tests.support.writers import Writer, Writing, lost
from tests.support.yjs_clients import YjsNode

StartServer = Callable[..., ServerProcess]
pytestmark = pytest.mark.e2e
FRAMES = int(os.environ.get("COLLAB_TEST_FUZZ_FRAMES", "20000"))


async def test_fuzzed_frames_lose_no_edit_and_leave_every_room_loadable(
    node: YjsNode, server_factory: StartServer, tmp_path: Path, room_name: str
) -> None:
    url = f"sqlite:///{tmp_path}/collab.sqlite3"
    env = {"COLLAB_DATABASE_URL": url, "COLLAB_CRDT_WORKERS": "2", "COLLAB_CRDT_DEADLINE": "0.5"}
    server = server_factory(env)
    rooms = [room_name, *(f"{room_name}-{i}" for i in range(5))]
    client = await node.connect(server.url, room_name)
    await client.wait_synced()
    writer = Writer(client, "real", rate=50)
    started = time.monotonic()
    async with Writing([writer]):
        run = await fuzz(
            server.url, rooms, frames=FRAMES, clients=6, seed=8, hostile=False, read_only=frozenset([room_name])
        )
    elapsed = time.monotonic() - started
    print(
        f"{run.frames} frames in {elapsed:.1f}s over {run.connections} connections; closes {dict(run.close_codes)}; "
        f"worker restarts {server.metric('collab_crdt_worker_restarts_total')}; writer made {writer.count} edits"
    )
    assert run.frames >= FRAMES - 8  # a send that found its connection closed is not counted
    status = await client.status()
    assert writer.count > 0 and not set(status["closeCodes"]) & {1006, 4400}, status

    async def nothing_lost() -> None:
        fresh = await node.connect(server.url, room_name)
        try:
            await fresh.wait_synced()
            assert lost([writer], {writer.text_name: await fresh.text(writer.text_name)}) == {}
        finally:
            await fresh.destroy()

    await eventually(nothing_lost, timeout=20)
    await client.destroy()
    assert await server.astop() != 0

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "collab_server", "rooms", "check"],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    server = server_factory(env, port=server.port)
    await nothing_lost()
