"""The documents a worker holds, and the one place pycrdt is called on untrusted bytes.

Each update is applied in a transaction of its own. When the library fails part-way (``ValueError``,
``RuntimeError``, or ``pyo3_runtime.PanicException``, which is a ``BaseException``), Yrs may already have
committed part of the update: the document can no longer be trusted. So every room keeps its *base*, the
list of byte strings that, applied in order to a fresh ``Doc``, rebuild its last good state (the stored
snapshot, the stored rows that applied, then every update accepted since). After a failure the document
is rebuilt from the base, and whatever the observer emitted during the failed call is dropped: it is
never stored or broadcast. Replaying the base is safe because Yrs is deterministic: those bytes applied
once, in that order, without failing.

The base is refolded (a snapshot of the integrated state plus the updates still pending) each time it
has grown by ``_REFOLD_AFTER`` entries, so it costs about what the document does. This module runs in the
worker process, or in the test process through ``local.InProcessEngine``; never in the server's
networking process.

A room whose document has had no update for a while is *cooled* (``Documents.cool_one``, called by the
worker between requests): its document is dropped and only its base is kept, refolded into one snapshot,
from which it is rebuilt at its next update. The library holds a document at 4 to 16 times its encoded
size (a tldraw board of 44 MiB: 560 MiB, against 148 MiB for Yjs in Node; ``bench/document_memory.py``),
while most rooms open at any moment are only being looked at, and their base is about 1x. A cooled room
still answers its state vector (kept) and syncs, and is compacted from the snapshot, without being
rebuilt. The snapshot is kept compressed (``RoomDoc.packed``): Yjs's encoding repeats every record's keys,
and a cooled tldraw board takes a third of its encoded size. A sync is answered from the snapshot, which a
worker decompresses once for the clients that sync together (``Documents._snapshot_of``); a client that
lacks none of the room's insertions (one reconnecting after a blip: nothing changed while the room was
idle) from the room's delete set, kept when it was cooled (``RoomDoc.deletions``), since a diff of the
snapshot decodes all of it.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from pycrdt import Doc, TransactionEvent, get_state, get_update

from collab_server.crdt.engine import Applied, BadRow, Loaded, Refusal
from collab_server.errors import ProtocolError
from collab_server.protocol import Reader, decode_state_vector
from persistence.base import Folded

# Refold the base after this many entries: a rebuild then replays one snapshot and a short tail.
_REFOLD_AFTER = 512
# zlib's fastest level, for a cooled room's snapshot: 3.2x smaller on tldraw boards, compressed at about
# 80 MB/s and decompressed at 300 (a fifth of the rebuild it precedes); higher levels gained little more.
_PACK_LEVEL = 1
# How long a worker keeps the last cooled snapshot it decompressed after its last use. Clients that join a
# cooled room together (a class opening its board, a reconnect storm) each sync from its snapshot, and
# decompressing it for each costs more than answering them (158 ms for a board of 100,000 records).
_UNPACKED_SECONDS = 2.0


def _refusal(exc: BaseException) -> Refusal:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    # pycrdt raises ValueError for bytes it cannot decode; anything else (a panic, a RuntimeError about a
    # block parent) means the library got part-way into the update.
    return Refusal.MALFORMED if isinstance(exc, ValueError) else Refusal.LIBRARY_FAILURE


def _try_apply(doc: Doc[Any], update: bytes) -> Refusal | None:
    try:
        with doc.transaction():
            doc.apply_update(update)
    except BaseException as exc:
        return _refusal(exc)
    return None


def _untouched(update: bytes) -> bool:
    """Whether a failed apply of ``update`` provably left the document as it was: the library decodes an
    update whole before it integrates any of it, so bytes that do not decode on their own never reached
    the document, and it need not be rebuilt (a rebuild replays the room's base: measured up to 1.6 s of
    CPU for a fuzzed room, paid for every undecodable update a client sent, which the watchdog took for
    a stall)."""
    try:
        get_state(update)
    except BaseException as exc:
        _refusal(exc)
        return True
    return False


def _replay(entries: Sequence[bytes]) -> tuple[Doc[Any], list[int]]:
    """A fresh doc holding ``entries`` applied in order; the indexes of entries that failed (rebuilt past).

    Some updates apply without complaint but leave the document unable to encode itself (the panic
    comes later, from ``get_update``: a room that loads and then fails every join). Encoding is what an
    observer does at each commit, so a replay whose result does not encode is done again with one:
    the row that breaks it then fails its own transaction and is set aside. And where every commit
    encoded its own changes but the whole document still does not encode (fuzz run J's ``fuzz-34``,
    docs/benchmarks.md), the row after which it stops encoding is found by bisecting the prefixes of the
    replay, and left out too, until the document encodes.
    """
    doc, failed = _replay_once(entries, observed=False)
    if _encodes(doc):
        return doc, failed
    doc, failed = _replay_once(entries, observed=True)
    for _ in range(_MAX_UNENCODABLE_ROWS):
        if _encodes(doc):
            return doc, failed
        skip = {*failed, _first_unencodable(entries, set(failed))}
        doc, failed = _replay_once(entries, observed=True, skip=skip)
        failed = sorted({*failed, *skip})
    if not _encodes(doc):
        raise RuntimeError("the document cannot be encoded even without its failing rows")
    return doc, failed


# Rows left out of a replay, one bisection each, for making the document unable to encode itself.
_MAX_UNENCODABLE_ROWS = 16


def _first_unencodable(entries: Sequence[bytes], skip: set[int]) -> int:
    """The index of the entry after which a replay of ``entries`` (without ``skip``) no longer encodes.

    The empty prefix encodes and the whole replay does not, so bisection ends on a prefix that encodes
    followed by one that does not: its last entry is the one that broke the document."""
    encodes, breaks = 0, len(entries)
    while breaks - encodes > 1:
        middle = (encodes + breaks) // 2
        doc, _ = _replay_once(entries[:middle], observed=True, skip=skip)
        if _encodes(doc):
            encodes = middle
        else:
            breaks = middle
    return breaks - 1


def _encodes(doc: Doc[Any]) -> bool:
    try:
        doc.get_update()
    except BaseException as exc:
        _refusal(exc)
        return False
    return True


def _replay_once(
    entries: Sequence[bytes], *, observed: bool, skip: set[int] | frozenset[int] = frozenset()
) -> tuple[Doc[Any], list[int]]:
    def fresh() -> Doc[Any]:
        doc: Doc[Any] = Doc()
        if observed:
            doc.observe(lambda event: event.update)
        return doc

    doc = fresh()
    good: list[bytes] = []
    failed: list[int] = []
    for index, entry in enumerate(entries):
        if index in skip:
            continue
        if _try_apply(doc, entry) is None:
            good.append(entry)
            continue
        failed.append(index)
        doc = fresh()
        for kept in good:  # applied fine before, in this order: they apply fine again
            doc.apply_update(kept)
    return doc, failed


class ColdRoomLost(Exception):
    """A cooled room's base did not rebuild the document it was cooled from."""


class Head(enum.Enum):
    """What the first entry of a room's base is known to be."""

    # An update (a stored row, or an update accepted since): it may wait for others, so it is not the
    # room's whole document.
    UPDATE = enum.auto()
    # The stored snapshot the room loaded: a whole document, known to load back (it just did).
    STORED = enum.auto()
    # A snapshot this document encoded (a refold): a whole document held by it by construction, so a
    # refold need not decode it again to find out; not yet known to load back.
    FOLDED = enum.auto()
    # Such a snapshot known to load back (a compaction's checked snapshot, or one the room was rebuilt
    # from): a cooled room is then compacted from it without the check (``Documents.fold``).
    FOLDED_LOADS = enum.auto()

    @property
    def whole(self) -> bool:
        """A whole document's snapshot: a cooled room whose base is that one entry is answered from it."""
        return self is not Head.UPDATE

    @property
    def folded(self) -> bool:
        return self in (Head.FOLDED, Head.FOLDED_LOADS)

    @property
    def loads(self) -> bool:
        return self in (Head.STORED, Head.FOLDED_LOADS)

    def loaded_back(self) -> Head:
        """The same entry, now known to load back."""
        return Head.FOLDED_LOADS if self is Head.FOLDED else self


class RoomDoc:
    """One room's document (None while the room is cooled), its base, and what its observer emitted in the
    current transaction."""

    __slots__ = (
        "base", "deletions", "doc", "emitted", "fragile", "head", "packed", "refold_at", "snapshots", "state",
        "subscription",
    )  # fmt: skip

    def __init__(self, doc: Doc[Any], base: list[bytes]) -> None:
        self.base = base
        self.head = Head.UPDATE  # what base[0] is known to be
        # Whether the library ever failed on this room (an update it got part-way into, a row that would not
        # replay): such a room is never cooled. Rebuilding replays its base, and rows that make the library
        # read memory it had freed apply in some replays and crash others (docs/benchmarks.md, fuzz run J):
        # a fuzz run that cooled every room after 1 s had three times the worker restarts of one that did not.
        self.fragile = False
        # Refold when the base is longer than this: measured from the last refold, not from zero, since
        # updates still pending stay in the base (a fuzz run's rooms held over 512 that never integrate,
        # and refolding them at every later update, each one decoded again, took 64 % of the workers' CPU).
        self.refold_at = _REFOLD_AFTER
        self.emitted: list[bytes] = []
        # Digests of snapshots this document is known to hold (it was loaded from them, or folded into
        # them): checking that a stored snapshot is held then costs a hash, not a decode of the snapshot.
        self.snapshots: list[bytes] = []
        self.doc: Doc[Any] | None = doc
        self.subscription = doc.observe(self._on_transaction)
        # The document's state vector, kept while it is cooled (a cooled room still answers it).
        self.state = b""
        # A cooled room's base when it is one whole snapshot, compressed (the base is then empty). A cooled
        # room whose base holds updates still pending keeps it as it is: it is rebuilt to answer anything.
        self.packed: bytes | None = None
        # A cooled room's answer to a client that lacks none of its insertions (a client that was connected
        # while it went idle, reconnecting): no structs, only its delete set. Diffing the snapshot for such
        # a client decodes all of it (0.9 s for a board of 100,000 records); this costs nothing.
        self.deletions: bytes | None = None

    def live(self) -> Doc[Any]:
        """The document, rebuilt from the base first if the room was cooled (``warm_up``)."""
        if self.doc is None:
            self.warm_up()
        assert self.doc is not None
        return self.doc

    def warm_up(self, unpacked: bytes | None = None) -> None:
        """Rebuild a cooled room's document from its base. ColdRoomLost if that does not give back the
        state it was cooled at: the library can encode a document into bytes that it then cannot load
        (fuzzing found such, ``fold``), and the base of a cooled room is such an encoding.

        A base that is one whole snapshot is applied as it is: a replay (``_replay``) would also encode the
        result to check that it can be, a third of a small board's rebuild, and this document was encoded
        when it was cooled. ``unpacked`` is that snapshot already decompressed, when the caller has it."""
        try:
            snapshot = unpacked if unpacked is not None else self.snapshot_held()
            if snapshot is None:
                self.rebuild()
            else:
                self.base, self.packed, self.deletions = [snapshot], None, None
                doc: Doc[Any] = Doc()
                doc.apply_update(snapshot)
                self._hold(doc)
        except BaseException as exc:  # the snapshot does not decompress or load, or not even the base's other entries
            _refusal(exc)  # encode (``_replay``): re-raises what is not the library's
            self.drop()
            raise ColdRoomLost(str(exc)) from exc
        assert self.doc is not None
        if decode_state_vector(self.doc.get_state()) != decode_state_vector(self.state):
            self.drop()
            raise ColdRoomLost("the rebuilt document is not the one that was cooled")
        self.head = self.head.loaded_back()

    def cool(self) -> int:
        """Drop the document, keeping the base it is rebuilt from (and its state vector); the bytes of the
        base. The base is refolded first, into one snapshot where nothing is pending: a cooled room then
        answers syncs from it, and is rebuilt from one entry instead of up to ``_REFOLD_AFTER``. That one
        snapshot is kept compressed (``packed``)."""
        if self.doc is not None:
            try:
                if (len(self.base) > 1 or not self.head.whole) and not self.refold():
                    self.fragile = True
                    return 0  # a document the library cannot encode stays as it is (its reads are refused)
                self.state = self.doc.get_state()
                self.deletions = self.doc.get_update(self.state) if self._one_snapshot() else None
            except BaseException as exc:  # or that it cannot read
                _refusal(exc)
                self.fragile = True
                return 0
        base_bytes = self.drop()
        if self.packed is None and self._one_snapshot():
            self.packed = zlib.compress(self.base[0], _PACK_LEVEL)
            self.base = []
        return base_bytes

    def _one_snapshot(self) -> bool:
        """Whether the base is one snapshot of the whole document, nothing pending: what a cooled room answers
        from, and keeps compressed."""
        return len(self.base) == 1 and self.head.whole

    def drop(self) -> int:
        """Let go of the document (the room is cooled or unloaded); the bytes of the base."""
        if self.doc is not None:
            self.doc.unobserve(self.subscription)
            self.doc = None
        return sum(map(len, self.base)) + len(self.packed or b"")

    def snapshot_held(self) -> bytes | None:
        """The document's whole state without rebuilding it: a cooled room's base when it is one snapshot.
        ColdRoomLost if it does not decompress (nothing but a memory error of the process could cause it)."""
        if self.packed is None:
            return None
        try:
            return zlib.decompress(self.packed)
        except zlib.error as exc:
            raise ColdRoomLost(f"the cooled snapshot does not decompress: {exc}") from exc

    def _on_transaction(self, event: TransactionEvent) -> None:
        self.emitted.append(event.update)

    def apply(self, update: bytes) -> Applied:
        doc = self.live()
        self.emitted.clear()
        refusal = _try_apply(doc, update)
        if refusal is not None:
            self.emitted.clear()  # what a failed call produced is never used
            if not (refusal is Refusal.MALFORMED and _untouched(update)):
                self.fragile = True
                self.rebuild()  # the library got part-way into it: never trust what it left
            return Applied(refusal)
        self.base.append(update)
        emitted = b"".join(self.emitted) if len(self.emitted) == 1 else _merge(self.emitted)
        self.emitted.clear()
        state = doc.get_state()
        # Nothing emitted: a re-sent update (nothing new), or one waiting for an update it depends on
        # (new: it must be stored, or it would be lost). Only then is the finer check worth its cost. The
        # library emits whenever a transaction changes the document, so then the state after the update is
        # the state before it: one state vector per update instead of two (each a transaction in pycrdt,
        # together a fifth of a worker's time on a growing text).
        new = bool(emitted) or not _integrated(update, state, decode_state_vector(state))
        if not new:
            self.base.pop()  # a duplicate changes nothing: the base need not grow
        if len(self.base) > self.refold_at:
            self.refold()
        return Applied(None, emitted, state, new)

    def apply_run(self, updates: Sequence[bytes]) -> list[Applied]:
        """Apply ``updates`` (from one source) in one transaction: one commit, one emitted update (given
        with the last one's answer). If the library fails on any of them, the document is rebuilt and
        they are applied one by one, so that only the failing one is refused."""
        if len(updates) == 1:
            return [self.apply(updates[0])]
        doc = self.live()
        self.emitted.clear()
        before = doc.get_state()
        try:
            with doc.transaction():
                for update in updates:
                    doc.apply_update(update)
        except BaseException as exc:
            _refusal(exc)  # re-raises what is not the library's
            self.emitted.clear()
            self.fragile = True
            self.rebuild()
            return [self.apply(update) for update in updates]
        emitted = b"".join(self.emitted) if len(self.emitted) == 1 else _merge(self.emitted)
        self.emitted.clear()
        # What the document held before the run tells a re-sent update (not stored, not kept in the base)
        # from a new one; the same bytes twice in the run are news once.
        seen: set[bytes] = set()
        new = []
        for update in updates:
            new.append(update not in seen and _news(update, before))
            seen.add(update)
        self.base.extend(update for update, is_new in zip(updates, new, strict=True) if is_new)
        if len(self.base) > self.refold_at:
            self.refold()
        state = doc.get_state()
        answers = [Applied(None, b"", state, is_new) for is_new in new]
        answers[-1] = Applied(None, emitted, state, new[-1])
        return answers

    def rebuild(self) -> None:
        """A document built anew from the base (after a failure, or to warm a cooled room)."""
        doc, failed = _replay(self.base)
        if failed:  # cannot happen for a deterministic library; never keep what does not replay
            self.fragile = True
            self.base = [entry for index, entry in enumerate(self.base) if index not in set(failed)]
            if 0 in failed:
                self.head = Head.UPDATE
        self._hold(doc)

    def _hold(self, doc: Doc[Any]) -> None:
        """Make ``doc`` the room's document, observed in place of the one it replaces."""
        if self.doc is not None:
            self.doc.unobserve(self.subscription)
        self.doc = doc
        self.subscription = doc.observe(self._on_transaction)

    def knows(self, snapshot: bytes | None) -> bool:
        """Whether ``snapshot`` (a stored one; None: no snapshot) is one this document is known to hold."""
        return snapshot is None or _digest(snapshot) in self.snapshots

    def remember(self, snapshot: bytes) -> None:
        """``snapshot`` is held (a compaction's, stored once it is written; the older ones stay known, in
        case it is not)."""
        self.snapshots = [*self.snapshots[-3:], _digest(snapshot)]

    def refold(self, snapshot: bytes | None = None, *, loads: bool = False) -> bool:
        """Replace the base by a snapshot of the document and the entries it does not hold yet (pending).
        ``snapshot``: the document's full state, just encoded by the caller (a compaction from the live
        document), so that it is not encoded again; ``loads``: it is known to load back. False if the
        document cannot be encoded: the base is kept as it is."""
        doc = self.live()
        if snapshot is None:
            try:
                snapshot = doc.get_update()
            except BaseException as exc:  # a document the library cannot encode: keep the base as it is
                _refusal(exc)
                return False
        state = doc.get_state()
        clocks = decode_state_vector(state)
        entries = self.base[1:] if self.head.folded else self.base
        pending = [entry for entry in entries if not _integrated(entry, state, clocks)]
        self.base = [snapshot, *pending]
        self.head = Head.FOLDED_LOADS if loads else Head.FOLDED
        self.refold_at = len(self.base) + _REFOLD_AFTER
        return True


def _merge(updates: list[bytes]) -> bytes:
    from pycrdt import merge_updates

    return merge_updates(*updates) if updates else b""


class Documents:
    """Every room a worker holds. Methods return results; refusals are values, never exceptions."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.rooms: dict[str, RoomDoc] = {}
        # Rooms whose document is held, each with when it last took an update: the least recently updated
        # first (a room updated again moves to the end), so finding those to cool costs nothing per update.
        self.warm: dict[str, float] = {}
        # Bytes of the bases of rooms unloaded or cooled since the worker last gave its free memory back (a
        # room that moved to a large room's worker leaves its document's memory here: ``worker.serve``).
        self.unloaded_bytes = 0
        # The last cooled snapshot decompressed (``_snapshot_of``), keyed by the compressed bytes it came
        # from, and when it was last used. One room's: what it costs in memory is bounded by that room.
        self._unpacked: tuple[bytes, bytes] | None = None
        self._unpacked_used = 0.0

    def _snapshot_of(self, room: str) -> bytes | None:
        """The room's ``snapshot_held()``, decompressed once for a run of reads: kept until
        ``_UNPACKED_SECONDS`` after its last use (``forget_unpacked``). Keyed by the very ``packed`` object,
        so a room cooled again, rebuilt or unloaded never gets another snapshot's bytes. None if the room is
        not here or not cooled, and if its snapshot does not decompress: then the room is given up as one
        whose rebuild failed (``_held``), and its callers, finding it gone, answer NOT_LOADED or fold the
        stored rows."""
        held = self.rooms.get(room)
        if held is None or held.packed is None:
            return None
        snapshot = self._kept(held)
        if snapshot is None:
            try:
                snapshot = held.snapshot_held()
            except ColdRoomLost:
                self.unload(room)  # given up: the server loads it again from the store
                return None
            assert snapshot is not None
            self._unpacked = (held.packed, snapshot)
        self._unpacked_used = self._clock()
        return snapshot

    def _kept(self, held: RoomDoc) -> bytes | None:
        """The kept decompressed snapshot if it is ``held``'s (decompressed from its very ``packed``)."""
        if self._unpacked is None or self._unpacked[0] is not held.packed:
            return None
        return self._unpacked[1]

    def _take_unpacked(self, held: RoomDoc) -> bytes | None:
        """The kept decompressed snapshot if it is ``held``'s, handed over (a room being rebuilt holds it
        as its base from then on)."""
        snapshot = self._kept(held)
        if snapshot is not None:
            self._unpacked = None
        return snapshot

    def unpacked_due(self) -> float | None:
        """Seconds until the kept decompressed snapshot is to be let go (0 if now), None if none is kept."""
        if self._unpacked is None:
            return None
        return max(self._unpacked_used + _UNPACKED_SECONDS - self._clock(), 0.0)

    def forget_unpacked(self) -> None:
        """Let go of the kept decompressed snapshot (the worker's idle wait, once it is due)."""
        if self._unpacked is not None:
            self.unloaded_bytes += len(self._unpacked[1])
            self._unpacked = None

    def _held(self, room: str, *, updated: bool) -> RoomDoc | None:
        """The room with its document, rebuilt first if it was cooled; it counts as updated now if
        ``updated`` or if it was rebuilt (it is held again, so it must be cooled again). None if the room is
        not here, or if its rebuild failed (``ColdRoomLost``): then it is dropped, its callers are told it
        is not loaded, and the server loads it again from the store, which holds every accepted update."""
        held = self.rooms.get(room)
        if held is None:
            return None
        if held.doc is None:
            try:
                held.warm_up(self._take_unpacked(held))
            except ColdRoomLost:
                self.unload(room)  # given up: the server loads it again from the store
                return None
            updated = True
        if updated:
            self.warm.pop(room, None)
            self.warm[room] = self._clock()
        return held

    def cooling_due(self, idle_seconds: float) -> float | None:
        """Seconds until the least recently updated room has been idle ``idle_seconds`` (0 if it has), or
        None if no room holds a document."""
        for updated in self.warm.values():
            return max(updated + idle_seconds - self._clock(), 0.0)
        return None

    def cool_one(self, idle_seconds: float) -> bool:
        """Cool the least recently updated room if it has had no update for ``idle_seconds`` (a fragile one
        is only struck off the list: it stays loaded)."""
        for room, updated in self.warm.items():
            if self._clock() - updated < idle_seconds:
                return False
            del self.warm[room]
            held = self.rooms[room]
            if held.fragile:
                return False
            self.unloaded_bytes += held.cool()
            return True
        return False

    def load(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Loaded:
        entries = ([snapshot] if snapshot is not None else []) + list(updates)
        doc, failed = _replay(entries)
        offset = 1 if snapshot is not None else 0
        bad = [BadRow(index - offset, Refusal.LIBRARY_FAILURE) for index in failed]
        failed_set = set(failed)
        base = [entry for index, entry in enumerate(entries) if index not in failed_set]
        old = self.rooms.pop(room, None)
        if old is not None:
            old.drop()
        held = self.rooms[room] = RoomDoc(doc, base)
        held.fragile = bool(failed)
        self._held(room, updated=True)
        if snapshot is not None and 0 not in failed_set:
            held.remember(snapshot)
            held.head = Head.STORED
        return Loaded(doc.get_state(), bad)

    def apply(self, room: str, update: bytes) -> Applied:
        held = self._held(room, updated=True)
        if held is None:
            return Applied(Refusal.NOT_LOADED)
        return held.apply(update)

    def apply_run(self, room: str, updates: Sequence[bytes]) -> list[Applied]:
        held = self._held(room, updated=True)
        if held is None:
            return [Applied(Refusal.NOT_LOADED) for _ in updates]
        return held.apply_run(updates)

    def diff(self, room: str, state_vector: bytes) -> bytes | Refusal:
        held = self.rooms.get(room)
        if held is None:
            return Refusal.NOT_LOADED
        try:
            clocks = decode_state_vector(state_vector)  # our own decoder first: Yrs never sees a malformed one
            if held.deletions is not None and _has_all(clocks, decode_state_vector(held.state)):
                return held.deletions  # a cooled room, and a client that lacks none of its insertions
            snapshot = self._snapshot_of(room)
            if snapshot is not None:  # a cooled room: the diff from its snapshot, without rebuilding it
                return get_update(snapshot, state_vector) if clocks else snapshot
            live = self._held(room, updated=False)
            return Refusal.NOT_LOADED if live is None else live.live().get_update(state_vector)
        except ProtocolError:
            return Refusal.BAD_STATE_VECTOR
        except BaseException as exc:
            _refusal(exc)
            return Refusal.BAD_STATE_VECTOR

    # Reads of a loaded document: a document the library cannot encode is refused, as an update would be,
    # rather than ending the worker (and every other room's document in it) with an uncaught panic.

    def state_vector(self, room: str) -> bytes | Refusal:
        held = self.rooms.get(room)
        if held is None:
            return Refusal.NOT_LOADED
        return held.state if held.doc is None else _read(held.doc.get_state)

    def delete_set(self, room: str) -> bytes | Refusal:
        cooled = self.rooms.get(room)
        if cooled is not None and cooled.deletions is not None:
            return cooled.deletions
        held = self._held(room, updated=False)
        if held is None:
            return Refusal.NOT_LOADED
        doc = held.live()
        return _read(lambda: doc.get_update(doc.get_state()))

    def full_state(self, room: str) -> bytes | Refusal:
        snapshot = self._snapshot_of(room)
        if snapshot is not None:
            return snapshot
        held = self._held(room, updated=False)
        return Refusal.NOT_LOADED if held is None else _read(held.live().get_update)

    def unload(self, room: str) -> None:
        held = self.rooms.pop(room, None)
        self.warm.pop(room, None)
        if held is not None:
            self.unloaded_bytes += held.drop()

    def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded | Refusal:
        """Fold a room's stored rows: from its live document when this worker holds the room and that
        document provably holds them (``fold_loaded``: no replay), else by replaying them.

        A snapshot is only returned once it loads back (``_loads_back``): the library can encode a fuzzed
        document into bytes that it then cannot load (a panic, or an endless loop, on every later load of
        the room), and a stored snapshot replaces the rows it folds. LIBRARY_FAILURE when no fold does:
        the rows stay in the log, where a load can still set the bad ones aside one by one."""
        encoded = self._snapshot_of(room)
        cooled = self.rooms.get(room)
        if cooled is not None and encoded is not None:
            # Compacted from its snapshot, without rebuilding it (a replica shutting down compacts every
            # room with unsaved rows: rebuilding its cooled rooms would take back all their memory).
            folded = fold_cooled(encoded, cooled.state, None if cooled.knows(snapshot) else snapshot, updates)
            if folded is not None and (cooled.head.loads or _loads_back(folded)):
                cooled.remember(folded.snapshot)
                cooled.head = cooled.head.loaded_back()
                return folded
        held = self._held(room, updated=True)  # a compaction follows updates: the room is in use
        if held is not None:
            folded = fold_loaded(held.live(), None if held.knows(snapshot) else snapshot, updates)
            if folded is not None and _loads_back(folded):
                held.remember(folded.snapshot)
                # The compaction's snapshot is the base's too: one encode.
                held.refold(folded.snapshot, loads=True)
                return folded
        entries = ([snapshot] if snapshot is not None else []) + list(updates)
        doc, failed = _replay(entries)
        offset = 1 if snapshot is not None else 0
        bad = [(index - offset, Refusal.LIBRARY_FAILURE.reason) for index in failed]
        bad_set = {index for index, _ in bad}
        good = [i for i in range(len(updates)) if i not in bad_set]
        folded = fold_doc(doc, [updates[i] for i in good])
        if not _loads_back(folded):
            return Refusal.LIBRARY_FAILURE
        return Folded(folded.snapshot, folded.state_vector, [good[i] for i in folded.folded], bad)


def _read(encode: Callable[[], bytes]) -> bytes | Refusal:
    try:
        return encode()
    except BaseException as exc:
        return _refusal(exc)


def _loads_back(folded: Folded) -> bool:
    """Whether ``folded.snapshot`` loads into a fresh document at the state vector it was encoded at."""
    doc: Doc[Any] = Doc()
    try:
        doc.apply_update(folded.snapshot)
        return decode_state_vector(doc.get_state()) == decode_state_vector(folded.state_vector)
    except BaseException as exc:
        _refusal(exc)
        return False


def fold_doc(doc: Doc[Any], updates: Sequence[bytes]) -> Folded:
    """Which of ``updates`` (already applied to ``doc``) the doc's full state really holds.

    A Yjs update can depend on one the log does not hold yet; Yrs keeps it *pending*, and
    ``get_update()`` leaves pending structs and deletes out. A row is folded only when every struct it
    carries is below the doc's state vector and every range it deletes is too; the others stay in the
    log (and in a worker's base), pending again after the next load, until what they wait for arrives.
    """
    state = doc.get_state()
    clocks = decode_state_vector(state)
    folded = [index for index, update in enumerate(updates) if _integrated(update, state, clocks)]
    return Folded(doc.get_update(), state, folded)


def _digest(snapshot: bytes) -> bytes:
    return hashlib.blake2b(snapshot, digest_size=16).digest()


Deletes = dict[int, list[tuple[int, int]]]  # client -> sorted, merged [start, end) clock ranges


def _beyond(update: bytes, state: bytes) -> Deletes | None:
    """What ``update`` holds beyond ``state``: None if it has structs the state lacks (or cannot be read),
    else its delete set (``get_update(update, state)`` keeps the whole delete set, whatever the state)."""
    try:
        diff = Reader(get_update(update, state))
        if diff.var_uint("struct count"):
            return None
        deletes: Deletes = {}
        for _ in range(diff.var_uint("delete set clients")):
            ranges = deletes.setdefault(diff.var_uint("delete set client"), [])
            for _ in range(diff.var_uint("delete set ranges")):
                clock = diff.var_uint("deleted clock")
                ranges.append((clock, clock + diff.var_uint("deleted length")))
    except ProtocolError:
        return None
    except BaseException as exc:
        _refusal(exc)
        return None  # not provably held: it stays in the log
    return deletes


def _has_all(clocks: dict[int, int], of: dict[int, int]) -> bool:
    """Whether a state vector (``clocks``) covers every insertion of another (``of``)."""
    return all(clocks.get(client, 0) >= clock for client, clock in of.items())


def _integrated(update: bytes, state: bytes, clocks: dict[int, int]) -> bool:
    """No structs beyond ``state`` and every deleted range below it. Enough for a document built from
    this very update (its deletes were applied), not for one that may never have seen it."""
    deletes = _beyond(update, state)
    if deletes is None:
        return False
    return all(clocks.get(client, 0) >= end for client, ranges in deletes.items() for _, end in ranges)


def _news(update: bytes, before: bytes) -> bool:
    """Whether ``update`` may carry something a document at ``before`` lacked: structs beyond it, or any
    delete (a delete of an item the document has is news unless it was deleted already; storing a
    re-sent delete costs bytes, losing a new one costs an edit, so a delete always counts as news)."""
    deletes = _beyond(update, before)
    return deletes is None or any(deletes.values())


def _merged(deletes: Deletes) -> Deletes:
    merged: Deletes = {}
    for client, ranges in deletes.items():
        out: list[tuple[int, int]] = []
        for start, end in sorted(ranges):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        merged[client] = out
    return merged


def _covered(deletes: Deletes, by: Deletes) -> bool:
    for client, ranges in deletes.items():
        held = by.get(client, [])
        starts = [start for start, _ in held]
        for start, end in ranges:
            at = bisect.bisect_right(starts, start) - 1
            if start == end:
                continue
            if at < 0 or held[at][1] < end:
                return False
    return True


def fold_loaded(doc: Doc[Any], snapshot: bytes | None, updates: Sequence[bytes]) -> Folded | None:
    """Fold stored rows into a snapshot of the live document that holds them, without replaying them.

    The live document holds every stored row, plus (usually) updates accepted but not stored yet, which
    the snapshot then holds too (harmless: they are stored later and apply as duplicates). A row is
    folded only if the document provably holds it: every struct below its state vector and every deleted
    range inside its delete set (a row another replica stored, which this document has not seen yet, is
    not: it stays in the log). None if the stored snapshot itself is not held: then the rows are replayed.
    """
    state = doc.get_state()
    try:
        deleted = _beyond(doc.get_update(state), state)
        encoded = doc.get_update()
    except BaseException as exc:  # a document the library cannot encode: the caller replays the rows
        _refusal(exc)
        return None
    return _fold_held(encoded, state, deleted, snapshot, updates)


def fold_cooled(encoded: bytes, state: bytes, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded | None:
    """``fold_loaded`` for a cooled room, from ``encoded`` (its whole document) and ``state`` (its state
    vector), without rebuilding its document: the snapshot is ``encoded`` itself."""
    return _fold_held(encoded, state, _beyond(encoded, state), snapshot, updates)


def _fold_held(
    encoded: bytes, state: bytes, deleted: Deletes | None, snapshot: bytes | None, updates: Sequence[bytes]
) -> Folded | None:
    """The fold of a document whose whole state is ``encoded``, at ``state``, with ``deleted`` its delete set."""
    if deleted is None:  # pragma: no cover - a document's own delete set always reads
        return None
    deleted = _merged(deleted)

    def held(row: bytes) -> bool:
        deletes = _beyond(row, state)
        return deletes is not None and _covered(deletes, deleted)

    if snapshot is not None and not held(snapshot):
        return None
    folded = [index for index, update in enumerate(updates) if held(update)]
    return Folded(encoded, state, folded)
