"""Presence entries (presence.registry): what is read from an awareness state, and their JSON form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collab_server.protocol import AwarenessEntry
from presence.registry import PresenceEntry, describe_state, entry_for


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
