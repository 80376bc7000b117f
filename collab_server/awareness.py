"""Awareness of one room as the server holds it, following y-protocols' acceptance rule.

The server keeps every client's latest state so that a peer joining later is shown who is already there,
and so that when a socket closes, the states it introduced can be removed for everyone at once (a state
removal is the client id with its clock bumped and a ``null`` state, exactly as a client sends it).
"""

from __future__ import annotations

from collab_server.protocol import AwarenessEntry


class AwarenessStates:
    """Client id → (clock, JSON state) for one room."""

    __slots__ = ("_clocks", "_states")

    def __init__(self) -> None:
        # Clocks outlive states: a removed client's clock must still fence off stale updates of it.
        self._clocks: dict[int, int] = {}
        self._states: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __repr__(self) -> str:
        return f"AwarenessStates(clients={sorted(self._states)})"

    def state(self, client_id: int) -> str | None:
        return self._states.get(client_id)

    def apply(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        """Apply an incoming update; returns the entries that changed something."""
        accepted = []
        for entry in entries:
            current = self._clocks.get(entry.client_id, 0)
            # y-protocols: a newer clock wins; a removal at the same clock wins over a live state.
            if current < entry.clock or (
                current == entry.clock and entry.removed and entry.client_id in self._states
            ):
                self._clocks[entry.client_id] = entry.clock
                if entry.removed:
                    self._states.pop(entry.client_id, None)
                else:
                    self._states[entry.client_id] = entry.state
                accepted.append(entry)
        return accepted

    def remove(self, client_ids: set[int]) -> list[AwarenessEntry]:
        """Remove live states of ``client_ids``; returns the removal entries to broadcast."""
        removals = []
        for client_id in client_ids:
            if client_id in self._states:
                clock = self._clocks[client_id] + 1
                self._clocks[client_id] = clock
                del self._states[client_id]
                removals.append(AwarenessEntry(client_id, clock, "null"))
        return removals

    def entries(self) -> list[AwarenessEntry]:
        """Every live state, as entries for a full awareness update."""
        return [AwarenessEntry(cid, self._clocks[cid], state) for cid, state in self._states.items()]
