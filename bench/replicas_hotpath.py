"""What the replication costs on the hot path of one replica, in process (no network, no Redis).

One room, one writer peer and --readers reader peers whose sockets just count frames. Every update goes
through ``Room.receive`` → apply → sink (store writer + replication) → broadcast, as on the server. The
same run with each replication:

    single-replica   collab_server.replication.SingleReplica (no-op hooks)
    presence-only    presence.embedded.PresenceOnly: what memory:// uses (presence in process)
    broker-alone     BrokerReplication on a LocalBroker, no other replica holds the room
    broker-shared    BrokerReplication on a LocalBroker, a second replica holds the room (every update
                     is published, and applied and broadcast there too: both replicas' work is counted)

    .venv/bin/python bench/replicas_hotpath.py --updates 20000 --repeat 5

Reports the best (least disturbed) of --repeat runs, in microseconds per update.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text, create_update_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collab_server.peer import AsgiSocket, Peer
from collab_server.replication import Replication, SingleReplica
from collab_server.rooms import RoomManager
from collab_server.settings import Settings
from persistence.memory import MemoryStore
from persistence.writer import AppendWriter
from presence.broker_replication import BrokerReplication
from presence.embedded import PresenceOnly
from presence.local import LocalBroker, LocalHub, LocalRegistry

VARIANTS = ("single-replica", "presence-only", "broker-alone", "broker-shared")


class CountingSocket:
    def __init__(self) -> None:
        self.frames = 0

    async def send(self, event: dict[str, Any]) -> None:
        self.frames += 1


def make_updates(count: int) -> list[bytes]:
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    messages = []
    for seq in range(count):
        before = doc.get_state()
        text.insert(len(text), f"#{seq:07d}#")
        messages.append(create_update_message(doc.get_update(before)))
    return messages


async def one_run(variant: str, updates: list[bytes], readers: int) -> float:
    hub = LocalHub()
    store = MemoryStore()
    managers: list[tuple[RoomManager, AppendWriter, Replication]] = []
    for name in ("a", "b") if variant == "broker-shared" else ("a",):
        replication: Replication
        if variant == "single-replica":
            replication = SingleReplica()
        elif variant == "presence-only":
            replication = PresenceOnly(LocalRegistry(hub), name)
            await replication.start()
        else:
            replication = BrokerReplication(LocalBroker(hub, name), LocalRegistry(hub), anti_entropy_interval=3600)
            await replication.start()
        writer = AppendWriter(store)
        writer.start()
        managers.append((RoomManager(store, writer, Settings(replica_id=name), replication), writer, replication))
    peers: list[Peer] = []
    rooms = []
    for rooms_manager, _, _ in managers:
        for _ in range(readers if len(managers) == 1 else readers // 2):
            peer = Peer(AsgiSocket(CountingSocket().send), room_name="r", max_messages=10**9)
            peers.append(peer)
            rooms.append(await rooms_manager.join("r", peer))
    author = Peer(AsgiSocket(CountingSocket().send), room_name="r")
    room = await managers[0][0].join("r", author)
    if variant == "broker-shared":
        link = managers[0][2].links["r"]  # type: ignore[attr-defined]
        while not link.replicas:  # noqa: ASYNC110 - the replicas discover each other in a few loop turns
            await asyncio.sleep(0.001)
    started = time.perf_counter()
    for n, message in enumerate(updates):
        room.receive(author, message)
        if n % 8 == 7:
            await asyncio.sleep(0)  # let broadcasts, pumps and consumers run, as between socket reads
    # Done when every replica has every update and every reader's send queue is empty (private: a bench).
    final = len(room.doc.get("text", type=Text))
    while any(len(r.doc.get("text", type=Text)) < final for r in rooms) or any(p._queue for p in peers):  # noqa: ASYNC110
        await asyncio.sleep(0)  # polling on purpose: this is the clock stopping when the queues drain
    elapsed = time.perf_counter() - started
    for rooms_manager, writer, replication in managers:
        await rooms_manager.close()
        await replication.close()
        await writer.close()
    return elapsed / len(updates) * 1e6


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=20000)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    updates = make_updates(args.updates)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for variant in args.variants:  # interleaved, so that background load hits all alike
            cost = await one_run(variant, updates, args.readers)
            best[variant] = min(best.get(variant, cost), cost)
    print(f"| variant | µs per update (best of {args.repeat}, {args.updates} updates, {args.readers} readers) |")
    print("|---|---|")
    for variant in args.variants:
        print(f"| {variant} | {best[variant]:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
