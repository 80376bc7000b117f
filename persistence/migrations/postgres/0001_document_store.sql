-- The document store: an append-only log of Yjs updates per room, folded into numbered snapshot
-- versions by compaction. Documents are keyed by the room name of the websocket path and carry no
-- foreign key to rooms: a room can hold a document before (or without) being registered over REST.

CREATE TABLE room_snapshots (
    room         text        NOT NULL,
    version      integer     NOT NULL,
    snapshot     bytea       NOT NULL,  -- full-state Yjs update
    state_vector bytea       NOT NULL,
    label        text,                  -- set for versions created on demand; never pruned
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, version)
    -- The primary key serves every read: the newest version (ORDER BY version DESC LIMIT 1), one
    -- version, the list of versions, and the pruning of old ones.
);

CREATE TABLE room_updates (
    room       text        NOT NULL,
    -- One sequence for all rooms: a batch spanning rooms is one INSERT, and seq orders each room's log.
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    "update"   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, seq)
    -- (room, seq) is the only access path: a load reads one room's tail in seq order, a compaction
    -- deletes the rows it folded by (room, seq). No index on seq alone: nothing reads across rooms.
);
