"""Awareness memory follows the live states: removed clients' clocks are pruned; the room limit is checked."""

from __future__ import annotations

from collab_server.awareness import AwarenessStates
from collab_server.protocol import AwarenessEntry


def test_clocks_of_removed_clients_are_pruned() -> None:
    states = AwarenessStates(max_removed=100)
    for client in range(10_000):
        states.apply([AwarenessEntry(client, 1, "{}")])
        states.apply([AwarenessEntry(client, 2, "null")])
    assert len(states) == 0
    assert len(states._clocks) == 0
    assert len(states._removed) == 100


def test_a_recently_removed_client_still_fences_off_its_stale_state() -> None:
    states = AwarenessStates()
    states.apply([AwarenessEntry(7, 3, '{"x": 1}')])
    assert states.remove({7}) == [AwarenessEntry(7, 4, "null")]
    assert states.apply([AwarenessEntry(7, 3, '{"x": 1}')]) == []
    assert states.apply([AwarenessEntry(7, 5, '{"x": 2}')]) == [AwarenessEntry(7, 5, '{"x": 2}')]
    assert states.state(7) == '{"x": 2}'


def test_would_exceed_counts_new_states_and_removals() -> None:
    states = AwarenessStates()
    states.apply([AwarenessEntry(i, 1, "{}") for i in range(3)])
    assert not states.would_exceed([AwarenessEntry(3, 1, "{}")], 4)
    assert states.would_exceed([AwarenessEntry(3, 1, "{}"), AwarenessEntry(4, 1, "{}")], 4)
    # Updating a live state or removing one never exceeds.
    assert not states.would_exceed([AwarenessEntry(0, 2, "{}")], 3)
    assert not states.would_exceed([AwarenessEntry(0, 2, "null"), AwarenessEntry(5, 1, "{}")], 3)
