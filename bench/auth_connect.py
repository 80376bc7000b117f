"""What authentication costs a connecting peer: websocket connections per second, with and without tokens.

Each connection opens ``/ws/{room}``, waits for the server's first frame (its sync step1, or its close
for a refused token) and closes. ``--concurrency`` connections are in flight at once. Scenarios, each on a
fresh server process (memory store, one replica):

    off        no authentication (today's behaviour)
    hs256      COLLAB_JWT_SECRET; a valid HS256 user token per connection, a public unregistered room
    rs256      COLLAB_JWT_PUBLIC_KEY; a valid RS256 user token
    room       a room token (the answer to a password or invite) for a registered private room
    bad        HS256 server, tokens with a bad signature: the refusal path (4401, nothing loaded)

    .venv/bin/python bench/auth_connect.py --connections 1000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import websockets
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import tokens  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402

SCENARIOS = ("off", "hs256", "rs256", "room", "bad")


def server_env(scenario: str, rsa: tokens.RsaKey) -> dict[str, str]:
    env = {"COLLAB_DATABASE_URL": "memory://", "COLLAB_LOG_LEVEL": "warning", "COLLAB_ROOM_GRACE": "30"}
    if scenario == "off":
        return env
    env["COLLAB_SECRET_KEY"] = tokens.SERVER_KEY
    if scenario == "rs256":
        return {**env, "COLLAB_JWT_PUBLIC_KEY": rsa.public_pem}
    return {**env, "COLLAB_JWT_SECRET": tokens.SECRET}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(url: str) -> bool:
    async with connect(url, open_timeout=10, compression=None) as ws:
        try:
            await ws.recv()
            return True
        except websockets.ConnectionClosed:
            return False


async def run(scenario: str, connections: int, concurrency: int) -> tuple[float, float, int]:
    rsa = tokens.RsaKey()
    server = ServerProcess(env=server_env(scenario, rsa), log_path=Path(tempfile.mkdtemp()) / "server.log").start()
    try:
        room, token = "bench-room", ""
        if scenario in ("hs256", "bad"):
            token = tokens.hs256("bench", key=tokens.SECRET if scenario == "hs256" else "x" * 40)
        elif scenario == "rs256":
            token = rsa.sign(tokens.claims("bench"), kid=False)
        elif scenario == "room":
            owner = tokens.bearer(tokens.hs256("owner"))
            async with httpx.AsyncClient(base_url=server.http, headers=owner) as client:
                created = await client.post("/api/rooms", json={"visibility": "private"})
                room = created.json()["id"]
                invite = (await client.post(f"/api/rooms/{room}/invites", json={"role": "editor"})).json()["token"]
                token = (await client.post(f"/api/rooms/{room}/join", json={"invite": invite})).json()["token"]
        url = f"{server.url}/{room}" + (f"?token={token}" if token else "")
        await one(url)  # loads the room once; the measurement is connections, not loads
        assert server.process is not None
        cpu_before = cpu_seconds(server.process.pid)
        queue = iter(range(connections))
        admitted = 0

        async def worker() -> None:
            nonlocal admitted
            for _ in queue:
                ok = await one(url)
                admitted += ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.process.pid) - cpu_before
        return connections / elapsed, cpu / connections * 1e6, admitted
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    args = parser.parse_args(argv)
    print(f"{'scenario':<8} {'conn/s':>8} {'server CPU us/conn':>19} {'admitted':>9}")
    for scenario in args.scenarios:
        rate, cpu_us, admitted = asyncio.run(run(scenario, args.connections, args.concurrency))
        print(f"{scenario:<8} {rate:>8.0f} {cpu_us:>19.0f} {admitted:>9}")


if __name__ == "__main__":
    main()
