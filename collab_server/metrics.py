"""Every Prometheus metric of the server, in one place.

Names start with ``collab_``. No metric is labelled with a room name: rooms are unbounded, and a label
per room would grow the scrape without limit. Labels used here take a handful of fixed values.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class LoopCounter:
    """One series of a ``LoopCounters``: a plain integer."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class LoopCounters(Collector):
    """A counter for the hot path, bumped only on the event loop's thread: each series is a plain integer,
    read when /metrics is scraped. A prometheus ``Counter`` takes a lock at every increment, and three of
    them per update were 5 % of the networking process with 1,000 busy rooms (docs/benchmarks.md)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self._name = name.removesuffix("_total")
        self._documentation = documentation
        self._labelnames = labelnames
        self._series: dict[tuple[str, ...], LoopCounter] = {}
        # An unlabelled counter shows 0 from the start, as a prometheus Counter does; inc() bumps it directly.
        self._unlabelled = None if labelnames else self.labels()
        REGISTRY.register(self)

    def labels(self, *values: str) -> LoopCounter:
        """The series for ``values`` (bind it once: this is a dict lookup)."""
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = LoopCounter()
        return series

    def inc(self, amount: int = 1) -> None:
        if self._unlabelled is None:
            raise ValueError(f"{self._name} takes labels {self._labelnames}: use labels(...).inc()")
        self._unlabelled.value += amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, counter in list(self._series.items()):
            family.add_metric(values, counter.value)
        yield family


CONNECTIONS = Gauge("collab_connections", "Open websocket peers")
LOOP_TASKS = Gauge("collab_loop_tasks", "Tasks alive on the event loop (an idle websocket connection holds none)")
ROOMS_LOADED = Gauge("collab_rooms_loaded", "Rooms held in memory")
ROOM_LOAD_SECONDS = Histogram(
    "collab_room_load_seconds",
    "Time to load a room from the store",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROOM_LOAD_FAILURES = Counter("collab_room_load_failures_total", "Room loads that failed")
MESSAGES_RECEIVED = LoopCounters("collab_messages_received_total", "Protocol messages received", ("type",))
UPDATES_DROPPED = Counter(
    "collab_updates_dropped_total", "Updates refused from peers (read-only, store overloaded)", ["reason"]
)
BROADCASTS = LoopCounters("collab_broadcasts_total", "Update broadcasts (one per event-loop tick per room)")
MESSAGES_SENT = LoopCounters("collab_messages_sent_total", "Messages queued to peers")
PEERS_CLOSED = Counter("collab_peers_closed_total", "Peers closed by the server", ["reason"])

STORE_COMMIT_SECONDS = Histogram(
    "collab_store_commit_seconds",
    "From an update's arrival to its commit in the store",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)
STORE_BATCH_SIZE = Histogram(
    "collab_store_batch_updates", "Updates per group commit", buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000)
)
STORE_PENDING_UPDATES = Gauge("collab_store_pending_updates", "Updates waiting to be committed")
STORE_PENDING_BYTES = Gauge("collab_store_pending_bytes", "Bytes of updates waiting to be committed")
STORE_ERRORS = Counter("collab_store_errors_total", "Failed store operations", ["operation"])
COMPACTIONS = Counter("collab_compactions_total", "Snapshots written by compaction")

# -- replicas: broker fan-out and presence (presence/) ----------------------------------------------
BROKER_PUBLISHED = Counter(
    "collab_broker_published_total", "Envelopes published to other replicas", ["kind"]
)
BROKER_RECEIVED = Counter(
    "collab_broker_received_total", "Envelopes received from other replicas and handled", ["kind"]
)
BROKER_DROPPED = Counter(
    "collab_broker_dropped_total",
    "Envelopes lost on the way (publish failed, outbox full, subscriber overflow, undecodable); "
    "each loss is repaired by a state-vector exchange",
    ["reason"],
)
BROKER_ERRORS = Counter(
    "collab_broker_errors_total", "Failed broker / presence operations", ["operation"]
)
BROKER_REPAIRS = Counter(
    "collab_broker_repairs_total",
    "State-vector exchanges started with other replicas, by what triggered them",
    ["trigger"],
)
BROKER_REPAIR_BYTES = Counter(
    "collab_broker_repair_bytes_total", "Bytes of sync step2 updates sent to other replicas to repair them"
)
BROKER_RECONNECTS = Counter("collab_broker_reconnects_total", "Broker subscriber connections (re)established")
BROKER_CONNECTED = Gauge("collab_broker_connected", "1 while the broker subscriber connection is live")
BROKER_OUTBOX = Gauge("collab_broker_outbox_envelopes", "Envelopes waiting to be published")
REPLICAS_DEAD = Counter(
    "collab_replicas_dead_total", "Other replicas presumed dead (heartbeat expired); their presence dropped"
)
STORE_LOAD_SECONDS = Histogram(
    "collab_store_load_seconds",
    "Time to read a room's newest snapshot and log from the store (the merge into a doc is not included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_COMPACT_SECONDS = Histogram(
    "collab_store_compact_seconds",
    "Time to fold a room's log into a snapshot version, lock wait included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

LOOP_LAG_SECONDS = Histogram(
    "collab_loop_lag_seconds",
    "How late the event loop ran a timer: how long some other work held the loop",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LOOP_LAG_RUNNING_SECONDS = Histogram(
    "collab_loop_lag_running_seconds",
    "Each loop-lag sample less the time the loop's thread waited for a CPU meanwhile (Linux): the lag the "
    "process made itself, where the rest of collab_loop_lag_seconds is CPU contention",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GC_TICK_SECONDS = Histogram(
    "collab_gc_tick_seconds",
    "Time of one collect-and-freeze of the objects allocated since the last (collab_server.gc_policy)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
GC_FROZEN_OBJECTS = Gauge(
    "collab_gc_frozen_objects",
    "Objects the cyclic garbage collector no longer walks; growth without more connections is a leak",
)
# -- access (collab_server.access, collab_server.api) -------------------------------------------------
SECURITY_EVENTS = Counter(
    "collab_security_events_total",
    "Failed authentications, refusals, rate-limited attempts and revocations, by kind",
    ["kind"],
)
TOKEN_VERIFY_SECONDS = Histogram(
    "collab_token_verify_seconds",
    "Time to verify one token (signature and claims)",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1),
)
JWKS_FETCHES = Counter("collab_jwks_fetches_total", "JWKS documents fetched from the identity provider", ["outcome"])
# -- the CRDT engine's worker processes (collab_server/crdt/) -----------------------------------------
CRDT_WORKER_RESTARTS = Counter(
    "collab_crdt_worker_restarts_total", "CRDT worker processes killed and replaced (crashed or past the deadline)"
)
LARGE_ROOMS = Gauge(
    "collab_large_rooms",
    "Rooms loaded in the CRDT workers kept for large rooms (COLLAB_LARGE_ROOM_BYTES; collab_server/crdt/pool.py)",
)
IDLE_DOCUMENTS = Gauge(
    "collab_idle_documents",
    "Loaded rooms without an update for COLLAB_IDLE_DOCUMENT_SECONDS: their CRDT worker keeps only their encoded "
    "form, or drops the document once it has no request to answer (collab_server/crdt/cooling.py)",
)
FRESH_SYNCS = Counter(
    "collab_fresh_syncs_total",
    "Whole documents sent to fresh clients, by where they came from: memory (unchanged since the last one; "
    "collab_server/crdt/fresh_sync.py) or the room's CRDT worker",
    ["source"],
)
CRDT_REQUEST_SECONDS = Histogram(
    "collab_crdt_request_seconds",
    "Round trip of one request (all the ops of one event-loop tick) to a CRDT worker",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
UPDATES_REFUSED = Counter(
    "collab_updates_refused_total",
    "Updates the document engine refused (malformed, library_failure, stalled, crashed, poison, ...)",
    ["reason"],
)
QUARANTINED_UPDATES = Counter(
    "collab_quarantined_updates_total", "Stored rows (updates or snapshots) moved to quarantine"
)
# -- exports (exports/) -------------------------------------------------------------------------------
EXPORT_QUEUE_DEPTH = Gauge("collab_export_queue_depth", "Export jobs waiting to be claimed (pending)")
EXPORT_JOBS = Counter(
    "collab_export_jobs_total",
    "Export jobs by how an attempt ended: completed, failed (for good), retried; and requested (enqueued)",
    ["status"],
)
EXPORT_RENDER_SECONDS = Histogram(
    "collab_export_render_seconds",
    "Time to render one export in the browser (page load, tldraw export, PDF printing)",
    ["format"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
EXPORT_BROWSER_RESTARTS = Counter(
    "collab_export_browser_restarts_total", "Chromium restarts of export workers (periodic, crash, timeout)"
)

# -- bounds and quotas (docs/hostile-input.md) ------------------------------------------------------
PEER_SLOWED_SECONDS = Counter(
    "collab_peer_slowed_seconds_total",
    "Seconds peers past their byte or message rates waited before their next frame was read",
)
FRAMES_IN_TASK = Counter(
    "collab_frames_in_task_total",
    "Binary frames handled by their connection's task instead of the read callback that received them "
    "(behind a rate pause or a spent loop turn; collab_server.reader)",
)
QUOTA_REFUSALS = Counter(
    "collab_quota_refusals_total",
    "Peers or connections refused for passing a rate or quota (closed with a transient code)",
    ["quota"],
)
CONNECTIONS_DROPPED = Counter(
    "collab_connections_dropped_total",
    "Connections dropped by the transport before or outside the app (slow handshake, handshake cap, "
    "pings from a client that does not read, keepalive timeout)",
    ["reason"],
)
HANDSHAKES = Gauge("collab_handshakes_in_progress", "Connections still sending their request headers")
NATIVE_PANICS = Counter("collab_native_panics_total", "Panic reports of the native CRDT library (Rust)")
LOG_LINES_SUPPRESSED = Counter(
    "collab_log_lines_suppressed_total", "Log lines about refused peers left out by the per-reason rate limit"
)
DOCUMENT_CALLS = Counter(
    "collab_document_calls_total",
    "Document calls of the REST document routes (JSON views, checks, diffs, patches, restores) by outcome",
    ["action", "outcome"],  # outcome: ok, refused (the document logic said no), failed (no worker could run it)
)

# -- admission of room sockets (collab_server.admission) ---------------------------------------------
CONNECTIONS_ADMITTED = Gauge(
    "collab_connections_admitted", "Room sockets admitted and open on this replica, joined or waiting to join"
)
CONNECTIONS_PENDING = Gauge(
    "collab_connections_pending", "Room sockets admitted but not in their room yet (authenticating, room loading)"
)
CONNECTIONS_REFUSED = Counter(
    "collab_connections_refused_total",
    "Room sockets refused at the upgrade (HTTP 503/429) by a connection cap: replica_full, pending_full, "
    "address_connections, address_rooms",
    ["reason"],
)
