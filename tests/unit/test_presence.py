"""Pure pieces of presence/: digests and step1, the Redis wire format, presence entries, embedded mode."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from collab_server.errors import ConfigError, ProtocolError
from collab_server.peer import Peer
from collab_server.protocol import AwarenessEntry, decode_state_vector, encode_awareness_message
from collab_server.rooms import RoomManager
from collab_server.secrets import SecretURL
from collab_server.settings import Settings
from persistence.memory import MemoryStore
from persistence.writer import AppendWriter
from presence.broker import Envelope, Gap, Kind, Subscription
from presence.factory import open_replication
from presence.local import LocalRegistry
from presence.redis import Frame, _Reassembly, decode_message, encode_messages
from presence.registry import PresenceEntry, describe_state, entry_for
from presence.replication import PresenceOnly, PresenceTracker, own_entries
from presence.sync import Step1, delete_set_digest, digest, has_structs, lacks
from tests.support.eventually import eventually
from tests.unit.fakes import RecordingSocket, make_room

# -- digests ----------------------------------------------------------------------------------------


def _two_replicas_of_one_history() -> tuple[Doc[Any], Doc[Any]]:
    """Two docs with the same content: one got every update on its own, the other all of them at once
    (so Yrs may encode their delete sets differently)."""
    author: Doc[Any] = Doc()
    text = author.get("t", type=Text)
    one: Doc[Any] = Doc()
    for n in range(6):
        before = author.get_state()
        text.insert(len(text), f"w{n} ")
        if n % 2:
            del text[0:2]
        one.apply_update(author.get_update(before))
    before = author.get_state()
    author.get("m", type=Map)["k"] = 1
    one.apply_update(author.get_update(before))
    other: Doc[Any] = Doc()
    other.apply_update(author.get_update())
    return one, other


def test_equal_content_has_equal_digests_whatever_the_order_it_arrived_in() -> None:
    one, other = _two_replicas_of_one_history()
    assert str(one.get("t", type=Text)) == str(other.get("t", type=Text))
    assert digest(one) == digest(other)
    assert delete_set_digest(one) == delete_set_digest(other)


def test_a_deletion_changes_the_digest_but_not_the_state_vector() -> None:
    one, other = _two_replicas_of_one_history()
    before = other.get_state()
    del other.get("t", type=Text)[0:1]
    assert other.get_state() == before
    assert delete_set_digest(one) != delete_set_digest(other)
    assert digest(one) != digest(other)


def test_state_vector_helpers() -> None:
    doc: Doc[Any] = Doc()
    assert decode_state_vector(doc.get_state()) == {}
    doc.get("t", type=Text).insert(0, "abc")
    mine = decode_state_vector(doc.get_state())
    assert list(mine.values()) == [3]
    assert lacks({}, mine) and not lacks(mine, {}) and not lacks(mine, mine)
    assert has_structs(doc.get_update(b"\x00"))
    assert not has_structs(doc.get_update(doc.get_state()))


def test_step1_round_trip() -> None:
    doc: Doc[Any] = Doc()
    doc.get("t", type=Text).insert(0, "x")
    step1 = Step1.of(doc, echo=True)
    assert Step1.decode(step1.encode()) == step1
    assert Step1.decode(Step1(b"\x00", b"", echo=False).encode()) == Step1(b"\x00", b"", False)
    with pytest.raises(ProtocolError):
        Step1.decode(b"\x05")


# -- Redis wire format ------------------------------------------------------------------------------


def test_small_envelopes_of_a_room_travel_in_one_message() -> None:
    envelopes = [Envelope("réplica", Kind.AWARENESS, b"payload", target="b"), Envelope("réplica", Kind.UPDATE, b"")]
    [message] = encode_messages("réplica", envelopes, count(1))
    assert decode_message(message) == [
        Frame(Kind.AWARENESS, "réplica", "b", 0, 0, 1, b"payload"),
        Frame(Kind.UPDATE, "réplica", "", 0, 0, 1, b""),
    ]


def test_bundles_stay_under_the_chunk_size() -> None:
    envelopes = [Envelope("a", Kind.UPDATE, bytes([n]) * 40) for n in range(10)]
    messages = encode_messages("a", envelopes, count(1), chunk_bytes=100)
    assert len(messages) == 5
    assert [f.payload for m in messages for f in decode_message(m)] == [e.payload for e in envelopes]


def test_a_large_envelope_is_split_and_reassembled() -> None:
    payload = bytes(range(256)) * 40
    small = Envelope("a", Kind.UPDATE, b"small")
    messages = encode_messages("a", [small, Envelope("a", Kind.SYNC_STEP2, payload), small], count(7), 1000)
    assert len(messages) == 1 + 11 + 1
    assembly = _Reassembly()
    frames = [frame for message in messages for frame in decode_message(message)]
    results = [assembly.add(b"ch", frame) for frame in frames[1:-1]]
    assert all(envelope is None for envelope, _ in results[:-1])
    assert results[-1] == (Envelope("a", Kind.SYNC_STEP2, payload), [])
    assert frames[0].payload == frames[-1].payload == b"small"


def test_a_repeated_part_loses_the_envelope_and_names_its_channel() -> None:
    messages = encode_messages("a", [Envelope("a", Kind.UPDATE, b"x" * 30)], count(1), chunk_bytes=10)
    [first] = decode_message(messages[0])
    assembly = _Reassembly()
    assembly.add(b"ch", first)
    assert assembly.add(b"ch", first) == (None, [b"ch"])


@pytest.mark.parametrize(
    "data", [b"", b"\x02\x01a", b"\x01\x05ab", b"\x01\x01a", b"\x01\x01a\x01\x00\x00\x00\x01\x09ab"]
)
def test_foreign_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(data)


# -- subscriptions ----------------------------------------------------------------------------------


async def test_an_overflowing_subscription_keeps_one_gap_and_what_follows() -> None:
    subscription = Subscription("r", max_messages=3)
    for n in range(4):  # the fourth overflows: the three queued and itself give way to one Gap
        subscription.deliver(Envelope("a", Kind.UPDATE, bytes([n])))
    subscription.gap("resubscribed")  # folded into the pending Gap
    subscription.deliver(Envelope("a", Kind.UPDATE, b"next"))
    batch = await subscription.next_batch()
    assert batch == [Gap("subscriber overflow"), Envelope("a", Kind.UPDATE, b"next")]


# -- presence entries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"user": {"name": "Ann", "color": "#f00"}}, ("Ann", "#f00")),
        ({"user": "Ann", "color": "#0f0"}, ("Ann", "#0f0")),
        ({"presence": {"userName": "Ann", "color": "#00f"}}, ("Ann", "#00f")),
        ({"name": "Ann", "colour": "red"}, ("Ann", "red")),
        ({"user": {"name": 3}}, (None, None)),
        ({}, (None, None)),
        ([1, 2], (None, None)),
    ],
)
def test_user_and_colour_are_read_from_common_state_shapes(state: Any, expected: tuple[Any, Any]) -> None:
    assert describe_state(state) == expected


def test_a_presence_entry_round_trips_through_json() -> None:
    entry = entry_for(AwarenessEntry(5, 2, json.dumps({"user": {"name": "Zoë"}})), "r1", 1700000000.5)
    assert entry == PresenceEntry(5, "Zoë", None, "r1", 1700000000.5)
    assert PresenceEntry.from_json(entry.to_json()) == entry


async def test_a_relayed_awareness_state_is_not_counted_as_ours() -> None:
    # y-websocket clients echo every awareness change they see, other clients' included.
    room, _ = make_room()
    socket = RecordingSocket()
    peer = Peer(socket.send, room_name=room.name)
    room.add(peer)
    tracker = PresenceTracker(LocalRegistry(), "me")
    own, relayed = AwarenessEntry(1, 1, '{"a":1}'), AwarenessEntry(2, 4, '{"b":2}')
    room.apply_awareness(encode_awareness_message([own])[2:], encode_awareness_message([own]), peer)
    assert own_entries(room, [own, relayed], tracker) == [own]
    tracker.observe(room.name, [own])
    removal = AwarenessEntry(1, 2, "null")
    assert own_entries(room, [removal, AwarenessEntry(2, 5, "null")], tracker) == [removal]


# -- embedded mode ----------------------------------------------------------------------------------


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
        peer = Peer(socket.send, room_name="r")
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
