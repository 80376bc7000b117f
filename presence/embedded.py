"""Embedded mode (``COLLAB_BROKER_URL=memory://``, the default): one replica, presence kept in process.

:class:`PresenceOnly` is the replication RoomManager gets then. There are no other replicas, so the
document hooks stay ``SingleReplica``'s no-ops and an edit costs nothing here; only awareness feeds the
in-process presence registry (presence.local.LocalRegistry), through the same tracker (presence.tracker)
and heartbeat (presence.liveness) a cluster uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from collab_server.errors import BrokerError
from collab_server.replication import SingleReplica
from presence.liveness import Heartbeat
from presence.tracker import PresenceTracker

if TYPE_CHECKING:
    from collab_server.replication import SharedRoom
    from presence.registry import PresenceRegistry


class PresenceOnly(SingleReplica):
    """One replica, no fan-out: SingleReplica's no-op document hooks, plus the presence registry."""

    presence: PresenceRegistry

    def __init__(self, registry: PresenceRegistry, replica_id: str, *, heartbeat_interval: float = 1.0) -> None:
        self.presence = registry
        self.replica_id = replica_id
        self._tracker = PresenceTracker(registry, replica_id)
        self._heartbeat = Heartbeat(registry, replica_id, heartbeat_interval, on_reset=self._tracker.rewrite_all)
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"PresenceOnly({self.replica_id!r})"

    async def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._tracker.run(), name="presence-tracker"),
                loop.create_task(self._heartbeat.run(), name="replica-heartbeat"),
            ]

    async def room_unloaded(self, name: str) -> None:
        self._tracker.forget_room(name)

    def publish_awareness(self, room: SharedRoom, message: bytes) -> None:
        self._tracker.observe_message(room, message)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._tracker.close()
        with contextlib.suppress(BrokerError):
            await self.presence.leave(self.replica_id)
        await self.presence.close()

    def describe(self) -> str:
        return f"in-process (single replica); presence: {self.presence.describe()}"
