"""What replicas compare and exchange to find out what one of them lacks: digests and the step1 payload.

A state vector (client id → clock) says which insertions a document has, but not which deletions: in
Yjs a transaction that only deletes does not advance any clock. Two replicas with equal state vectors
may still differ in their *delete sets*. So everything compared here covers both:

- ``digest(state_vector, delete_set)``: 16 bytes over both, each in a canonical form (Yrs may encode
  equal delete sets differently: client order, split ranges), for the periodic anti-entropy;
- a step1 carries the state vector plus the delete set's digest, so the answering replica can tell
  whether the asker lacks anything at all, and whether it lacks something of the asker's (the "echo").

Everything here works on the bytes a room hands out (``SharedRoom.state_vector()`` and ``delete_set()``,
awaited by presence.repair), never on a document. The delete set is an update v1 without structs:
``varUint(0) varUint(#clients) { varUint(client) varUint(#ranges) { varUint(clock) varUint(length) } }``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrdt import write_var_uint

from collab_server.protocol import Reader, decode_state_vector

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom


def lacks(mine: dict[int, int], theirs: dict[int, int]) -> bool:
    """True if ``theirs`` has insertions ``mine`` does not."""
    return any(clock > mine.get(client, 0) for client, clock in theirs.items())


def has_structs(update: bytes) -> bool:
    """True if a (v1) update inserts anything; False if it carries only a delete set."""
    return bool(update) and update[0] != 0


def _canonical_delete_set(delete_set: bytes) -> bytes:
    cursor = Reader(delete_set)
    if cursor.var_uint() != 0:
        raise ValueError("expected an update without structs")
    ranges: dict[int, list[tuple[int, int]]] = {}
    for _ in range(cursor.var_uint()):
        client = cursor.var_uint()
        spans = ranges.setdefault(client, [])
        for _ in range(cursor.var_uint()):
            clock = cursor.var_uint()
            spans.append((clock, cursor.var_uint()))
    parts: list[bytes] = []
    for client in sorted(ranges):
        merged: list[list[int]] = []
        for clock, length in sorted(ranges[client]):
            if merged and clock <= merged[-1][0] + merged[-1][1]:
                last = merged[-1]
                last[1] = max(last[1], clock + length - last[0])
            elif length > 0:
                merged.append([clock, length])
        if merged:
            parts.append(write_var_uint(client) + write_var_uint(len(merged)))
            parts.extend(write_var_uint(clock) + write_var_uint(length) for clock, length in merged)
    return b"".join(parts)


def _canonical_state_vector(state_vector: bytes) -> bytes:
    pairs = sorted(decode_state_vector(state_vector).items())
    return b"".join(write_var_uint(client) + write_var_uint(clock) for client, clock in pairs if clock)


def delete_set_digest(delete_set: bytes) -> bytes:
    """16 bytes identifying a delete set, equal on every replica that has the same deletions."""
    return hashlib.blake2b(_canonical_delete_set(delete_set), digest_size=16).digest()


def digest(state_vector: bytes, delete_set: bytes) -> bytes:
    """16 bytes identifying a document's content (state vector and delete set), for anti-entropy."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(_canonical_state_vector(state_vector))
    hasher.update(b"/")
    hasher.update(_canonical_delete_set(delete_set))
    return hasher.digest()


async def room_digest(room: SharedRoom) -> bytes:
    """The digest of a room's document as it is now."""
    return digest(await room.state_vector(), await room.delete_set())


@dataclass(frozen=True, slots=True)
class Step1:
    """ "Send me what I lack." ``echo``: also ask for what *I* have that you lack (a step1 back).
    ``answer``: reply with a step2 even when it is empty: the asker is loading the room and holds its
    first client back until every replica holding the room has answered."""

    state_vector: bytes
    delete_set_digest: bytes
    echo: bool
    answer: bool = False

    def encode(self) -> bytes:
        flags = (1 if self.echo else 0) | (2 if self.answer else 0)
        return (
            write_var_uint(len(self.state_vector))
            + self.state_vector
            + write_var_uint(len(self.delete_set_digest))
            + self.delete_set_digest
            + write_var_uint(flags)
        )

    @classmethod
    def decode(cls, payload: bytes) -> Step1:
        cursor = Reader(payload)
        state_vector = cursor.var_bytes()
        ds_digest = cursor.var_bytes()
        flags = cursor.var_uint()
        return cls(state_vector, ds_digest, bool(flags & 1), bool(flags & 2))

    @classmethod
    async def of(cls, room: SharedRoom, *, echo: bool, answer: bool = False) -> Step1:
        """The step1 of a room's document as it is now."""
        return cls(await room.state_vector(), delete_set_digest(await room.delete_set()), echo, answer)
