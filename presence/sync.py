"""State-vector exchange between replicas: what to compare, what to send.

A state vector (client id → clock) says which insertions a document has, but not which deletions: in
Yjs a transaction that only deletes does not advance any clock. Two replicas with equal state vectors
may still differ in their *delete sets*. So everything compared here covers both:

- ``digest(doc)``: 16 bytes over the state vector and the delete set, both in a canonical form (Yrs may
  encode equal delete sets differently: client order, split ranges), for the periodic anti-entropy.
- a step1 carries the state vector plus the delete set's digest, so the answering replica can tell
  whether the asker lacks anything at all, and whether it lacks something of the asker's (the "echo").

Update v1 layout used here: ``varUint(#clients with structs) ... delete set``; an update produced by
``doc.get_update(doc.get_state())`` has no structs, only the whole delete set:
``varUint(#clients) { varUint(client) varUint(#ranges) { varUint(clock) varUint(length) } }``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, write_var_uint

from collab_server.protocol import Reader, decode_state_vector

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom

_EMPTY_DIGEST = b""


def lacks(mine: dict[int, int], theirs: dict[int, int]) -> bool:
    """True if ``theirs`` has insertions ``mine`` does not."""
    return any(clock > mine.get(client, 0) for client, clock in theirs.items())


def has_structs(update: bytes) -> bool:
    """True if a (v1) update inserts anything; False if it carries only a delete set."""
    return bool(update) and update[0] != 0


def _canonical_delete_set(update_without_structs: bytes) -> bytes:
    cursor = Reader(update_without_structs)
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


def delete_set_digest(doc: Doc[Any]) -> bytes:
    """16 bytes identifying the doc's delete set, equal on every replica that has the same deletions."""
    return digest_of_delete_set(doc.get_update(doc.get_state()))


def digest_of_delete_set(delete_set: bytes) -> bytes:
    """``delete_set_digest`` of a delete set (an update without structs)."""
    return hashlib.blake2b(_canonical_delete_set(delete_set), digest_size=16).digest()


def digest(doc: Doc[Any]) -> bytes:
    """16 bytes identifying the doc's content (state vector and delete set), for anti-entropy."""
    state = doc.get_state()
    return digest_of(state, doc.get_update(state))


def digest_of(state_vector: bytes, delete_set: bytes) -> bytes:
    """``digest`` of a state vector and a delete set."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(_canonical_state_vector(state_vector))
    hasher.update(b"/")
    hasher.update(_canonical_delete_set(delete_set))
    return hasher.digest()


async def room_digest(room: SharedRoom) -> bytes:
    """``digest`` of a room whose document lives in the CRDT engine."""
    return digest_of(await room.state_vector(), await room.delete_set())


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
    def of(cls, doc: Doc[Any], *, echo: bool, answer: bool = False) -> Step1:
        return cls(doc.get_state(), delete_set_digest(doc), echo, answer)

    @classmethod
    async def of_room(cls, room: SharedRoom, *, echo: bool, answer: bool = False) -> Step1:
        state_vector = await room.state_vector()
        return cls(state_vector, digest_of_delete_set(await room.delete_set()), echo, answer)
