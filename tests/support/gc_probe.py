"""A server whose cyclic garbage can be counted: ``python -m tests.support.gc_probe``.

Runs the server in this process on uvloop (as ``collab-server`` does), with the garbage collector
disabled once it has started, and prints ``ready PORT``. Each line ``collect`` read from stdin is
answered with one JSON line: how many objects the collector finds unreachable now (objects that only it
could ever free) and their types; each line ``census``, with the objects it tracks, by type. Clients
must run in another process, so that only the server's own objects are counted.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import sys

import uvicorn
import uvloop

from collab_server.server import uvicorn_config
from collab_server.settings import Settings
from tests.support.eventually import eventually
from tests.support.servers import free_port


def _unreachable() -> dict[str, object]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = collections.Counter(type(obj).__qualname__ for obj in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return {"unreachable": found, "kinds": dict(kinds.most_common(20))}


def _census() -> dict[str, object]:
    """The objects the collector tracks (alive, or garbage it has not collected), by type: all of them.

    With the collector off, a closed connection's objects that only it could free are still here. Counting
    them is the check that does not depend on how ``gc.collect()`` counts: a cycle through a suspended
    generator (websockets' parser) is finalized before it is counted, and ``collect`` reported none of the
    ServerProtocols such cycles held."""
    objects = gc.get_objects()
    kinds = collections.Counter(type(obj).__qualname__ for obj in objects)
    return {"tracked": len(objects), "kinds": dict(kinds)}


async def _main() -> None:
    port = free_port()
    settings = Settings.from_env({**os.environ, "COLLAB_PORT": str(port), "COLLAB_GC_FREEZE_INTERVAL": "0"})
    server = uvicorn.Server(uvicorn_config(settings))
    serving = asyncio.ensure_future(server.serve())

    def started() -> None:
        assert server.started

    await eventually(started, timeout=30)
    gc.collect()
    gc.disable()
    print(f"ready {port}", flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"collect":
            print(json.dumps(_unreachable()), flush=True)
        elif line.strip() == b"census":
            print(json.dumps(_census()), flush=True)
    server.should_exit = True
    await serving


if __name__ == "__main__":
    uvloop.run(_main())
