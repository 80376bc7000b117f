"""Roles in a room, ordered: a viewer reads, an editor also writes, the owner also manages the room."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a principal may do in one room. Compare with ``rank``: owner > editor > viewer."""

    VIEWER = "viewer"
    EDITOR = "editor"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank

    @property
    def can_write(self) -> bool:
        return self.rank >= _RANK[Role.EDITOR]


def lowest(a: Role, b: Role) -> Role:
    return a if a.rank <= b.rank else b


_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.OWNER: 2}
