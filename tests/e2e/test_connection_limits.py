"""Connection caps (collab_server.admission), against a real server process with real websockets: a
socket past a cap is refused at the upgrade with an HTTP status, before any document byte; the sockets
already open carry on; once one leaves, the next gets in.

The server trusts ``X-Forwarded-For`` from 127.0.0.1 (uvicorn's default ``FORWARDED_ALLOW_IPS``), so the
tests play several client addresses through that header, as a local reverse proxy would send it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from tests.support.eventually import eventually
from tests.support.floods import round_trip
from tests.support.postgres import reachable, run_sync, temporary_database
from tests.support.servers import ServerProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.yjs_clients import YjsNode

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., ServerProcess]


def client(address: str) -> dict[str, str]:
    """Headers of a socket that the trusted proxy (the test, on 127.0.0.1) says comes from ``address``."""
    return {"X-Forwarded-For": address}


@asynccontextmanager
async def joined(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[ClientConnection]:
    """A socket in its room: the server's sync step1 has arrived."""
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        first = await asyncio.wait_for(ws.recv(decode=False), 10)
        assert first[:2] == b"\x00\x00", first[:8]
        yield ws


async def refused(url: str, headers: dict[str, str] | None = None) -> Response:
    """The HTTP answer to an upgrade the server turns down."""
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(url, additional_headers=headers, open_timeout=10):
            pass
    return refusal.value.response


async def admitted(url: str, headers: dict[str, str] | None = None) -> None:
    """A socket gets into its room (AssertionError if it is refused, for ``eventually``)."""
    try:
        async with joined(url, headers):
            pass
    except InvalidStatus as exc:
        raise AssertionError(f"refused: {exc.response.status_code} {exc.response.body!r}") from exc


async def test_connections_per_address_are_capped_and_other_addresses_get_in(
    server_factory: ServerFactory, room_name: str
) -> None:
    server = server_factory({"COLLAB_MAX_CONNECTIONS_PER_ADDRESS": "3"})
    url = f"{server.url}/{room_name}"
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(joined(url, client("203.0.113.7"))) for _ in range(3)]
        response = await refused(url, client("203.0.113.7"))
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "10"
        assert response.body == b"your address holds its limit of 3 connections\n"
        other = await stack.enter_async_context(joined(url, client("203.0.113.8")))
        for ws in (*held, other):
            await round_trip(ws)
        assert server.metric('collab_connections_refused_total{reason="address_connections"}') == 1
        assert server.metric("collab_connections_admitted") == 4

        await held.pop().close()
        await eventually(lambda: admitted(url, client("203.0.113.7")))


async def test_the_forwarded_address_counts_only_from_a_trusted_proxy(
    server_factory: ServerFactory, room_name: str
) -> None:
    # The test's 127.0.0.1 is not a trusted proxy here: its X-Forwarded-For is ignored, so sockets that
    # claim two addresses are one address's.
    server = server_factory({"COLLAB_MAX_CONNECTIONS_PER_ADDRESS": "2", "FORWARDED_ALLOW_IPS": "192.0.2.1"})
    url = f"{server.url}/{room_name}"
    async with joined(url, client("203.0.113.1")), joined(url, client("203.0.113.2")):
        response = await refused(url, client("203.0.113.3"))
    assert response.status_code == 429


async def test_past_the_replica_cap_new_sockets_get_503_and_open_ones_carry_on(
    server_factory: ServerFactory, room_name: str
) -> None:
    server = server_factory({"COLLAB_MAX_CONNECTIONS": "3"})
    async with AsyncExitStack() as stack:
        held = [
            await stack.enter_async_context(joined(f"{server.url}/{room_name}-{i % 2}", client(f"198.51.100.{i}")))
            for i in range(3)
        ]
        response = await refused(f"{server.url}/{room_name}-2", client("198.51.100.9"))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.body == b"this server holds its limit of 3 connections; retry later\n"
        for ws in held:
            await round_trip(ws)
        assert server.metric('collab_connections_refused_total{reason="replica_full"}') == 1
        assert server.metric('collab_connections_refused_total{reason="address_connections"}', 0) == 0

        await held.pop().close()
        await eventually(lambda: admitted(f"{server.url}/{room_name}-2", client("198.51.100.9")))


async def test_rooms_held_at_once_per_address_are_capped(server_factory: ServerFactory, room_name: str) -> None:
    server = server_factory({"COLLAB_MAX_ROOMS_PER_ADDRESS": "2"})
    tab = client("203.0.113.20")
    async with joined(f"{server.url}/{room_name}-a", tab) as in_a:
        async with joined(f"{server.url}/{room_name}-b", tab) as in_b:
            # Another socket to a room the address holds is not another room.
            await admitted(f"{server.url}/{room_name}-a", tab)
            response = await refused(f"{server.url}/{room_name}-c", tab)
            assert response.status_code == 429
            assert response.body == b"your address holds its limit of 2 open rooms\n"
            await admitted(f"{server.url}/{room_name}-c", client("203.0.113.21"))
            await round_trip(in_b)
        await round_trip(in_a)
        # Room b is no longer held: room c may be opened.
        await eventually(lambda: admitted(f"{server.url}/{room_name}-c", tab))
    assert server.metric('collab_connections_refused_total{reason="address_rooms"}') == 1


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    problem = run_sync(reachable)
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable ({problem}); set COLLAB_TEST_POSTGRES_URL")
    with temporary_database("collab_limits") as url:
        yield url


async def test_sockets_waiting_for_a_stalled_store_are_capped_and_joined_ones_carry_on(
    server_factory: ServerFactory, pg_url: str, room_name: str
) -> None:
    async with TcpProxy.for_url(pg_url) as proxy:
        env = {"COLLAB_DATABASE_URL": proxy.url(pg_url), "COLLAB_MAX_PENDING_CONNECTIONS": "2"}
        server = await asyncio.to_thread(server_factory, env)
        async with joined(f"{server.url}/{room_name}-loaded") as settled:
            proxy.stall()  # the store stops answering: rooms being loaded wait
            waiting = [await connect(f"{server.url}/{room_name}-new-{i}", open_timeout=10) for i in range(2)]

            async def both_pending() -> None:
                assert await asyncio.to_thread(server.metric, "collab_connections_pending") == 2

            await eventually(both_pending)
            response = await refused(f"{server.url}/{room_name}-new-2")
            assert response.status_code == 503
            assert response.body == b"2 connections are waiting to join their rooms; retry later\n"
            await round_trip(settled)  # a room in memory does not need the store to answer

            proxy.restore()
            for ws in waiting:  # their rooms load: the server's sync step1 arrives
                assert (await asyncio.wait_for(ws.recv(decode=False), 15))[:2] == b"\x00\x00"
                await ws.close()
            await eventually(lambda: admitted(f"{server.url}/{room_name}-new-2"))
        refusals = await asyncio.to_thread(server.metric, 'collab_connections_refused_total{reason="pending_full"}')
        assert refusals == 1


async def test_a_refused_yjs_provider_backs_off_and_gets_in_once_a_socket_leaves(
    server_factory: ServerFactory, node: YjsNode, room_name: str
) -> None:
    server = server_factory({"COLLAB_MAX_CONNECTIONS": "2"})
    url = f"{server.url}/{room_name}"
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(joined(url, client(f"192.0.2.{i}"))) for i in range(2)]
        provider = await node.connect(server.url, room_name, max_backoff_ms=300)

        async def turned_away() -> None:
            status = await provider.status()
            assert status["lastError"] == "Unexpected server response: 503", status
            assert not status["synced"] and status["shouldConnect"], status

        await eventually(turned_away)
        assert server.metric('collab_connections_refused_total{reason="replica_full"}') >= 1
        for ws in held:
            await round_trip(ws)

        await held.pop().close()
        await provider.wait_synced(timeout=15)  # it kept retrying, and got in
        await provider.insert_text(0, "in at last")
        # ... and the socket that stayed all along is sent its edit.
        while (frame := await asyncio.wait_for(held[0].recv(decode=False), 10))[:2] != b"\x00\x02":
            pass
        assert b"in at last" in frame
