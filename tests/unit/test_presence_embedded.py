"""Embedded mode (presence.embedded) and picking the replication from the settings (presence.factory)."""

from __future__ import annotations

import json

import pytest

from collab_server.errors import ConfigError
from collab_server.peer import Peer
from collab_server.protocol import AwarenessEntry, encode_awareness_message
from collab_server.rooms import RoomManager
from collab_server.secrets import SecretURL
from collab_server.settings import Settings
from persistence.memory import MemoryStore
from persistence.writer import AppendWriter
from presence.embedded import PresenceOnly
from presence.factory import open_replication
from tests.support.eventually import eventually
from tests.unit.fakes import RecordingSocket


async def test_embedded_mode_keeps_presence_in_process_and_nothing_per_edit() -> None:
    settings = Settings(database_url=SecretURL("memory://"), replica_id="solo")
    replication = await open_replication(settings)
    assert isinstance(replication, PresenceOnly)
    store = MemoryStore()
    writer = AppendWriter(store)
    writer.start()
    rooms = RoomManager(store, writer, settings, replication)
    try:
        socket = RecordingSocket()
        peer = Peer(socket, room_name="r")
        room = await rooms.join("r", peer)
        state = {"user": {"name": "Ann", "color": "#abc"}}
        room.receive(peer, encode_awareness_message([AwarenessEntry(9, 1, json.dumps(state))]))

        async def listed() -> None:
            assert [(e.client_id, e.user, e.color, e.replica) for e in await replication.presence.list("r")] == [
                (9, "Ann", "#abc", "solo")
            ]

        await eventually(listed)
        rooms.leave(room, peer)

        async def gone() -> None:
            assert await replication.presence.list("r") == []

        await eventually(gone)
        assert "in-process" in replication.describe()
    finally:
        await rooms.close()
        await replication.close()
        await writer.close()


async def test_an_unknown_broker_scheme_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="COLLAB_BROKER_URL"):
        await open_replication(Settings(broker_url=SecretURL("kafka://somewhere")))


def test_replica_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"COLLAB_BROKER_PREFIX": "blue", "COLLAB_HEARTBEAT_INTERVAL": "0.5", "COLLAB_ANTI_ENTROPY_INTERVAL": "3"}
    )
    assert (settings.broker_prefix, settings.heartbeat_interval, settings.anti_entropy_interval) == ("blue", 0.5, 3)
    with pytest.raises(ConfigError, match="COLLAB_HEARTBEAT_INTERVAL must be positive"):
        Settings.from_env({"COLLAB_HEARTBEAT_INTERVAL": "0"})
