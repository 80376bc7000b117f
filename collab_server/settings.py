"""Settings: one frozen object, read from ``COLLAB_*`` environment variables and CLI flags.

Every field below is a setting. Its environment key is ``COLLAB_`` + the upper-cased name, its CLI flag
``--`` + the name with dashes, and its help text the field's ``help`` metadata, so the three can never
drift apart. Values are cast strictly; a bad value raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collab_server.errors import ConfigError
from collab_server.secrets import Secret, SecretURL

ENV_PREFIX = "COLLAB_"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _default_replica_id() -> str:
    # Unique per process: two replicas on one host (or a restarted pod) must never share an id, or
    # each would drop the other's broker envelopes as its own.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "interface to listen on")
    port: int = _setting(8000, "TCP port to listen on")
    database_url: SecretURL = _setting(
        SecretURL("sqlite:///collab.sqlite3"),
        "document store: sqlite:///PATH (default, relative to the working directory), "
        "postgresql://USER@HOST/DB, or memory:// (nothing kept across restarts)",
    )
    broker_url: SecretURL = _setting(
        SecretURL("memory://"), "fan-out between replicas: memory:// (one process) or redis://HOST:PORT/DB"
    )
    replica_id: str = _setting("", "this process's id on the broker (empty: host-pid-random)")
    log_level: str = _setting("info", "debug, info, warning or error")
    log_json: bool = _setting(False, "log one JSON object per line instead of text")

    max_message_bytes: int = _setting(
        32 * 1024 * 1024, "largest incoming websocket frame; larger ones close the peer with 1009"
    )
    send_queue_messages: int = _setting(
        2000, "messages a peer may have waiting to be sent before it is closed as too slow (1013)"
    )
    send_queue_bytes: int = _setting(
        64 * 1024 * 1024, "bytes a peer may have waiting to be sent before it is closed as too slow"
    )
    ws_deflate: bool = _setting(
        False, "accept permessage-deflate (costs memory per connection and CPU; see docs/benchmarks.md)"
    )
    ping_interval: float = _setting(30.0, "seconds between websocket pings; 0 disables keepalive")
    ping_timeout: float = _setting(20.0, "seconds to wait for a pong before closing a dead socket")

    # -- bounds on what one client controls (docs/hostile-input.md) ---------------------------------
    max_messages_per_frame: int = _setting(
        512, "y-websocket messages one frame may carry; more closes the peer with 4400 (clients send one)"
    )
    max_state_vector_clients: int = _setting(
        100_000, "entries a sync step1's state vector may hold; more closes the peer with 4400"
    )
    max_awareness_entries: int = _setting(
        5000, "client states one awareness message may carry; more closes the peer with 4400"
    )
    max_awareness_state_bytes: int = _setting(
        64 * 1024, "bytes of JSON one client's awareness state may take; more closes the peer with 4400"
    )
    max_awareness_depth: int = _setting(
        64, "nesting depth of an awareness state's JSON; deeper closes the peer with 4400"
    )
    max_awareness_clients_per_peer: int = _setting(
        16, "awareness clients one connection may bring into a room (a y-websocket client has one); more: 4400"
    )
    max_awareness_states: int = _setting(
        5000, "live awareness states per room; a peer adding one more is closed with 4503 (retries)"
    )
    peer_bytes_per_second: float = _setting(
        4 * 1024 * 1024, "sustained bytes per second one peer may send; a faster peer is slowed, then closed with 4529"
    )
    peer_bytes_burst: int = _setting(
        48 * 1024 * 1024, "bytes one peer may send at once above the sustained rate (at least the largest frame)"
    )
    peer_messages_per_second: float = _setting(
        20_000.0,
        "sustained messages per second one peer may send (a tldraw drag at 60 fps sends ~120; a script typing "
        "one update per keystroke as fast as the server takes them, ~20,000); a faster peer is slowed, then 4529",
    )
    peer_messages_burst: int = _setting(40_000, "messages one peer may send at once above the sustained rate")
    peer_rate_patience: float = _setting(
        10.0, "seconds of slowing a peer past its rates may accumulate (refilled at 0.5 s/s) before it is closed"
    )
    max_document_bytes: int = _setting(
        256 * 1024 * 1024, "largest document a room may grow to; an update past it closes the peer with 4513"
    )
    room_loads_per_minute: int = _setting(
        1200, "rooms one client address may open (load into memory) per minute; more are refused with 4529"
    )
    handshake_timeout: float = _setting(
        5.0, "seconds a connection may take to send its request headers (websocket upgrade) before it is dropped"
    )
    max_handshakes: int = _setting(
        1024, "connections that may be sending their request headers at once; more are dropped at accept"
    )
    max_connections: int = _setting(
        20_000,
        "room sockets this replica holds at once (joined or joining); more are refused at the upgrade with "
        "HTTP 503 (lowered at startup to what the file-descriptor limit leaves room for)",
    )
    max_pending_connections: int = _setting(
        2048, "room sockets that may wait at once to be authenticated and join their room; more: HTTP 503"
    )
    max_connections_per_address: int = _setting(
        2000, "room sockets one client address may hold at once; more are refused with HTTP 429"
    )
    max_rooms_per_address: int = _setting(
        1000, "distinct rooms one client address may hold sockets in at once; a socket to another is refused (429)"
    )

    turn_budget_ms: float = _setting(
        4.0,
        "milliseconds of frames the event loop handles as it reads sockets, per poll of the sockets (or one "
        "busy socket's task, per turn), before the rest waits for a later turn",
    )
    gc_freeze_interval: float = _setting(
        0.0,
        "seconds between two collect-and-freeze passes that keep the garbage collector off long-lived "
        "objects (0, the default: CPython's own collector; see README before turning this on)",
    )
    gc_thresholds: str = _setting(
        "1000,4,500",
        "the garbage collector's three thresholds (gc.set_threshold), or 'default' for CPython's 700,10,10; "
        "1000,4,500 keeps full collections (a stall of every room) rare under load and young ones short",
    )
    load_timeout: float = _setting(30.0, "seconds a joining peer waits for its room to load")
    room_grace: float = _setting(10.0, "seconds a room with no peers stays loaded before it unloads")
    # 20 ms rather than 5: a busy server commits about once per window, and each commit costs the
    # database the same whatever its size. With 5 ms, PostgreSQL spent 5.9-6.3 s of CPU on one growing-
    # document run and 2.9-3.4 s with 20, beside the server on a 2-core machine (docs/benchmarks.md).
    # Fan-out never waits for a commit; only the durable copy is that much later.
    commit_window_ms: float = _setting(
        20.0, "group commit: milliseconds appends wait to be written together in one transaction"
    )
    commit_batch: int = _setting(2000, "group commit: most updates written in one transaction")
    write_buffer_bytes: int = _setting(
        256 * 1024 * 1024,
        "bytes of updates held in memory while the store is unreachable; past it new edits are refused",
    )
    compact_updates: int = _setting(1000, "compact a room's log into a snapshot after this many updates")
    compact_bytes: int = _setting(4 * 1024 * 1024, "... or after this many bytes of updates")
    snapshot_versions: int = _setting(
        10, "automatic snapshot versions kept per room (older ones are pruned; named versions are kept)"
    )
    snapshot_max_age: float = _setting(
        30 * 24 * 3600.0,
        "seconds an automatic snapshot version is kept (0: no age limit); the newest and named ones are kept",
    )
    crdt_workers: int = _setting(
        0, "CRDT worker processes holding the rooms' documents (0: one per CPU core it may run on, at most 8)"
    )
    document_workers: int = _setting(
        1, "CRDT worker processes for the REST document routes (JSON views, patches, restores), apart from the rooms'"
    )
    crdt_deadline: float = _setting(
        1.0,
        "seconds of CPU time a CRDT worker may spend on a request before it is killed and restarted (and at "
        "most ten times as long in wall time, if it uses none)",
    )
    crdt_worker_nice: int = _setting(
        5,
        "niceness of the CRDT workers above the server's own (0-19; 0: the same priority): when the CPU is "
        "short, the process holding the sockets (pings, /healthz, fan-out) is served before the workers",
    )
    large_room_bytes: int = _setting(
        4 * 1024 * 1024,
        "stored bytes from which a room loads in a CRDT worker kept for large rooms, so that loading, "
        "compacting or syncing it never holds up the rooms on the other workers (0: every room on its "
        "hashed worker)",
    )
    large_room_workers: int = _setting(
        1, "CRDT worker processes kept for large rooms (started with the others, about 28 MiB each when idle)"
    )
    idle_document_seconds: float = _setting(
        60.0,
        "seconds without an update after which a room's CRDT worker drops its document and keeps only its "
        "encoded form (about 1x, against 4-16x loaded), rebuilding it at the next update; syncs are still "
        "answered (0: keep every document)",
    )
    fresh_sync_bytes: int = _setting(
        64 * 1024 * 1024,
        "bytes of whole documents kept for fresh clients, one per room until it changes (0: none kept); a "
        "document over a quarter of this is never kept",
    )
    poison_ttl: float = _setting(
        600.0, "seconds an update that crashed or stalled a CRDT worker is refused on sight"
    )
    shutdown_timeout: float = _setting(
        20.0,
        "seconds to close sockets on SIGTERM, and then to compact rooms (every room's edits are committed "
        "first; a room not compacted in time is compacted at its next load)",
    )
    auto_migrate: bool = _setting(
        True, "PostgreSQL: apply pending schema migrations at startup (off: run `collab-server migrate`)"
    )
    database_pool_size: int = _setting(10, "PostgreSQL: most connections this replica opens")
    database_timeout: float = _setting(
        10.0,
        "PostgreSQL: seconds a connect or a statement may take before the store counts as unreachable",
    )
    broker_prefix: str = _setting(
        "collab", "prefix of every Redis channel and key of the broker and presence (deployments may share a Redis)"
    )
    heartbeat_interval: float = _setting(
        1.0,
        "seconds between replica heartbeats; when a replica dies, the others drop its clients' presence "
        "within three intervals",
    )
    anti_entropy_interval: float = _setting(
        15.0, "seconds between digest comparisons of loaded rooms with other replicas (repairs lost fan-out)"
    )
    presence_ttl: float = _setting(60.0, "seconds a presence entry lives in the registry without activity")

    # -- access (collab_server.access, collab_server.api) ---------------------------------------
    auth: str = _setting(
        "auto",
        "auto: authentication is on as soon as a COLLAB_JWT_* key is set; on: require it; off: no "
        "authentication at all (every caller is one anonymous owner of every room)",
    )
    jwt_secret: Secret = _setting(Secret(), "HS256/384/512 shared secret of your identity provider's tokens")
    jwt_public_key: Secret = _setting(
        Secret(), "RS*/ES*/PS* public key (PEM text, or @path of a PEM file) of your identity provider's tokens"
    )
    jwt_jwks_url: str = _setting("", "JWKS URL of your identity provider (keys cached, refetched on a new kid)")
    jwt_issuer: str = _setting("", "required iss claim of user tokens (empty: not checked)")
    jwt_audience: str = _setting("", "required aud claim of user tokens (empty: not checked)")
    jwt_name_claim: str = _setting("name", "claim of user tokens that holds the display name")
    jwt_leeway: float = _setting(30.0, "seconds of clock skew allowed when checking exp and nbf")
    secret_key: Secret = _setting(
        Secret(),
        "the server's own key for room tokens and invites (empty: a random key per process, so they do "
        "not survive a restart nor work across replicas)",
    )
    rooms: str = _setting(
        "open", "open: a room exists as soon as someone connects; registered: only rooms created over REST"
    )
    invite_url: str = _setting(
        "",
        "the link an invite carries: your app's page that takes it, with {room} and {invite} in it, e.g. "
        "https://app.example.com/board/{room}?invite={invite} (empty: the join API's URL, which takes a POST)",
    )
    room_token_ttl: float = _setting(3600.0, "seconds a room token (the answer to a password or invite) lasts")
    bcrypt_cost: int = _setting(12, "bcrypt cost factor of room passwords (4-31)")
    join_attempts: int = _setting(10, "password / invite attempts per room and client address per join_window")
    join_window: float = _setting(60.0, "seconds over which join_attempts are counted")
    max_body_bytes: int = _setting(64 * 1024, "largest REST request body; larger ones are refused with 413")
    document_max_bytes: int = _setting(
        16 * 1024 * 1024,
        "largest update or JSON patch POST /api/rooms/{id}/document takes (413 past it), and largest document "
        "read as JSON or restored",
    )
    document_max_structs: int = _setting(
        1_000_000, "most items one update or document may hold for the REST document routes"
    )
    document_max_depth: int = _setting(
        64, "deepest nesting of values and types the REST document routes read or write"
    )
    cors_origins: str = _setting("", "comma-separated origins allowed to call the REST API (empty: none)")
    # -- exports (exports/) ------------------------------------------------------------------------------
    blob_url: str = _setting(
        "file:./exports-data", "where finished exports are kept: file:PATH / file:///PATH, or s3://BUCKET/PREFIX"
    )
    blob_signing_key: Secret = _setting(
        Secret(), "HMAC key of the download links of file: blob stores (empty: a random key per process, so "
        "links die with it)"
    )
    blob_url_ttl: int = _setting(3600, "seconds a download link (signed or S3-presigned) stays valid")
    s3_endpoint: str = _setting("", "S3: endpoint URL of an S3-compatible store (empty: AWS)")
    s3_region: str = _setting("", "S3: region (empty: the AWS default chain)")
    s3_path_style: bool = _setting(False, "S3: path-style addressing (most S3-compatible stores need it)")
    s3_access_key_id: Secret = _setting(Secret(), "S3: access key id (empty: the AWS default credential chain)")
    s3_secret_access_key: Secret = _setting(Secret(), "S3: secret access key")
    tldraw_license_key: Secret = _setting(
        Secret(), "tldraw licence key handed to the export renderer's editor (tldraw requires one in production)"
    )
    export_worker: bool = _setting(True, "run an export worker inside the server (off: run `collab-server worker`)")
    export_concurrency: int = _setting(1, "export jobs one worker renders at once")
    export_job_timeout: float = _setting(120.0, "seconds one export attempt may take before it is abandoned")
    export_lease: float = _setting(30.0, "seconds a worker's claim on a job lasts unless renewed (every third of it)")
    export_max_attempts: int = _setting(3, "attempts per export job before it fails for good")
    export_retry_backoff: float = _setting(5.0, "seconds before a failed attempt is retried (doubles each attempt)")
    export_poll_interval: float = _setting(5.0, "seconds an idle worker waits between queue checks without a wake-up")
    export_browser_restart_jobs: int = _setting(100, "restart the worker's Chromium after this many jobs")
    export_chromium: str = _setting("/usr/bin/chromium", "the Chromium binary exports render in")
    export_renderer_dir: str = _setting(
        "", "the built renderer page (empty: exports/renderer/web/dist beside the installed code)"
    )
    export_nice: int = _setting(
        19, "CPU priority of the export worker's Chromium: nice 0-19, where 19 also means the idle class "
        "(renders only take CPU time the server's realtime path leaves); 0 leaves it alone"
    )
    export_raster_above: int = _setting(
        1500, "PDF pages with more shapes than this are printed from a PNG (raster) instead of SVG (vector)"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``COLLAB_*`` keys of ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in env:
                values[f.name] = cast_value(key, f.type, env[key])
        return cls(**values).validated()

    @property
    def jwt_configured(self) -> bool:
        """A COLLAB_JWT_* key names a way to verify user tokens."""
        return bool(self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url)

    @property
    def auth_enabled(self) -> bool:
        configured = self.jwt_configured or bool(self.jwt_issuer or self.jwt_audience)
        return self.auth == "on" or (self.auth == "auto" and configured)

    @property
    def gc_threshold_values(self) -> tuple[int, int, int] | None:
        """``gc_thresholds`` as ``gc.set_threshold`` takes them; None for CPython's defaults (or if invalid)."""
        parts = self.gc_thresholds.split(",")
        if len(parts) != 3 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
            return None
        young, middle, old = (int(part) for part in parts)
        return young, middle, old

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> Settings:
        for name in (
            "port", "max_message_bytes", "send_queue_messages", "send_queue_bytes", "commit_batch", "turn_budget_ms",
            *_BOUNDS,
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.document_workers < 1:
            raise ConfigError(f"{ENV_PREFIX}DOCUMENT_WORKERS must be positive")
        if self.gc_threshold_values is None and self.gc_thresholds != "default":
            raise ConfigError(f"{ENV_PREFIX}GC_THRESHOLDS must be three positive integers (1000,4,500) or default")
        if self.gc_freeze_interval < 0:
            raise ConfigError(f"{ENV_PREFIX}GC_FREEZE_INTERVAL must be 0 (CPython's default collector) or positive")
        if self.large_room_bytes < 0:
            raise ConfigError(f"{ENV_PREFIX}LARGE_ROOM_BYTES must be 0 (no workers for large rooms) or positive")
        if self.large_room_workers < 1:
            raise ConfigError(f"{ENV_PREFIX}LARGE_ROOM_WORKERS must be positive")
        if self.idle_document_seconds < 0:
            raise ConfigError(f"{ENV_PREFIX}IDLE_DOCUMENT_SECONDS must be 0 (keep every document) or positive")
        if self.fresh_sync_bytes < 0:
            raise ConfigError(f"{ENV_PREFIX}FRESH_SYNC_BYTES must be 0 (keep none) or positive")
        if not 0 <= self.crdt_worker_nice <= 19:
            raise ConfigError(f"{ENV_PREFIX}CRDT_WORKER_NICE must be between 0 and 19")
        if self.crdt_workers < 0:
            raise ConfigError(f"{ENV_PREFIX}CRDT_WORKERS must be 0 (one per core) or positive")
        for name in ("heartbeat_interval", "anti_entropy_interval", "presence_ttl", "crdt_deadline"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.peer_bytes_burst < self.max_message_bytes:
            # A frame larger than the burst could never be taken from the bucket.
            raise ConfigError(f"{ENV_PREFIX}PEER_BYTES_BURST must be at least {ENV_PREFIX}MAX_MESSAGE_BYTES")
        if self.auth not in {"auto", "on", "off"}:
            raise ConfigError(f"{ENV_PREFIX}AUTH must be auto, on or off")
        if self.rooms not in {"open", "registered"}:
            raise ConfigError(f"{ENV_PREFIX}ROOMS must be open or registered")
        if self.invite_url and "{invite}" not in self.invite_url:
            raise ConfigError(f"{ENV_PREFIX}INVITE_URL must hold {{invite}} (where the invite token goes)")
        if not 4 <= self.bcrypt_cost <= 31:
            raise ConfigError(f"{ENV_PREFIX}BCRYPT_COST must be between 4 and 31")
        for name in (
            "room_token_ttl", "join_attempts", "join_window", "max_body_bytes", "document_max_bytes",
            "document_max_structs", "document_max_depth",
            "export_concurrency", "export_job_timeout", "export_lease", "export_max_attempts",
            "export_poll_interval", "export_browser_restart_jobs", "blob_url_ttl",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if not 0 <= self.export_nice <= 19:
            raise ConfigError(f"{ENV_PREFIX}EXPORT_NICE must be between 0 and 19")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"{ENV_PREFIX}LOG_LEVEL must be debug, info, warning or error")
        if not self.replica_id:
            return dataclasses.replace(self, replica_id=_default_replica_id())
        return self


_BOUNDS = (
    "max_messages_per_frame",
    "max_state_vector_clients",
    "max_awareness_entries",
    "max_awareness_state_bytes",
    "max_awareness_depth",
    "max_awareness_clients_per_peer",
    "max_awareness_states",
    "peer_bytes_per_second",
    "peer_bytes_burst",
    "peer_messages_per_second",
    "peer_messages_burst",
    "peer_rate_patience",
    "max_document_bytes",
    "room_loads_per_minute",
    "handshake_timeout",
    "max_handshakes",
    "max_connections",
    "max_pending_connections",
    "max_connections_per_address",
    "max_rooms_per_address",
)


def cast_value(key: str, type_name: Any, raw: str) -> Any:
    """Cast one raw setting; ``type_name`` is the dataclass field's (string) annotation."""
    type_name = getattr(type_name, "__name__", type_name)
    try:
        if type_name == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "SecretURL":
            return SecretURL(raw)
        if type_name == "Secret":
            return Secret(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a valid {type_name}") from None


def setting_fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))
