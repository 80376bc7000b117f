"""Awareness of one room as the server holds it, following y-protocols' acceptance rule.

The server keeps every client's latest state so that a peer joining later is shown who is already there,
and so that when a socket closes, the states it introduced can be removed for everyone at once (a state
removal is the client id with its clock bumped and a ``null`` state, exactly as a client sends it).

Memory is bounded by what is live: a removed client's clock is kept only as one of the most recent
``max_removed`` removals (to fence off its stale updates that are still in flight), so a peer cycling
through millions of client ids leaves nothing behind. How many live states a room may hold is checked by
the caller with ``would_exceed`` before applying (the room's limit is a setting).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from collab_server.protocol import AwarenessEntry

DEFAULT_MAX_REMOVED = 4096


class AwarenessStates:
    """Client id → (clock, JSON state) for one room."""

    __slots__ = ("_clocks", "_max_removed", "_removed", "_states")

    def __init__(self, max_removed: int = DEFAULT_MAX_REMOVED) -> None:
        # Clocks of live states; a removed client's clock moves to _removed (newest last).
        self._clocks: dict[int, int] = {}
        self._states: dict[int, str] = {}
        self._removed: OrderedDict[int, int] = OrderedDict()
        self._max_removed = max_removed

    def __len__(self) -> int:
        return len(self._states)

    def __repr__(self) -> str:
        return f"AwarenessStates(clients={sorted(self._states)}, removed={len(self._removed)})"

    def state(self, client_id: int) -> str | None:
        return self._states.get(client_id)

    def clock(self, client_id: int) -> int:
        """The clock last seen for ``client_id`` (0 if unknown or long gone)."""
        clock = self._clocks.get(client_id)
        return clock if clock is not None else self._removed.get(client_id, 0)

    def new_clients(self, entries: list[AwarenessEntry]) -> set[int]:
        """Client ids that ``entries`` would add as live states (not live now, not a removal)."""
        return {entry.client_id for entry in entries if not entry.removed and entry.client_id not in self._states}

    def would_exceed(self, entries: list[AwarenessEntry], max_states: int) -> bool:
        """Would applying ``entries`` leave more than ``max_states`` live states? (Removals count down.)"""
        added = 0
        for entry in entries:
            live = entry.client_id in self._states
            if entry.removed:
                added -= live
            elif not live:
                added += 1
        return added > 0 and len(self._states) + added > max_states

    def apply(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        """Apply an incoming update; returns the entries that changed something."""
        accepted = []
        for entry in entries:
            client_id = entry.client_id
            current = self.clock(client_id)
            # y-protocols: a newer clock wins; a removal at the same clock wins over a live state.
            if current < entry.clock or (current == entry.clock and entry.removed and client_id in self._states):
                if entry.removed:
                    self._forget(client_id, entry.clock)
                else:
                    self._removed.pop(client_id, None)
                    self._clocks[client_id] = entry.clock
                    self._states[client_id] = entry.state
                accepted.append(entry)
        return accepted

    def remove(self, client_ids: Iterable[int]) -> list[AwarenessEntry]:
        """Remove live states of ``client_ids``; returns the removal entries to broadcast."""
        removals = []
        for client_id in client_ids:
            if client_id in self._states:
                clock = self._clocks[client_id] + 1
                self._forget(client_id, clock)
                removals.append(AwarenessEntry(client_id, clock, "null"))
        return removals

    def _forget(self, client_id: int, clock: int) -> None:
        self._states.pop(client_id, None)
        self._clocks.pop(client_id, None)
        removed = self._removed
        removed.pop(client_id, None)
        removed[client_id] = clock
        while len(removed) > self._max_removed:
            removed.popitem(last=False)

    def entries(self) -> list[AwarenessEntry]:
        """Every live state, as entries for a full awareness update."""
        return [AwarenessEntry(cid, self._clocks[cid], state) for cid, state in self._states.items()]
