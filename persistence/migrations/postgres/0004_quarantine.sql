-- Stored rows the CRDT engine could not apply (it failed, panicked, crashed or stalled on them), moved
-- out of room_updates / room_snapshots so that the room loads from the rest. Kept, never deleted:
-- they are evidence, and a fixed CRDT library may apply them one day.

CREATE TABLE room_quarantine (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room           text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('update', 'snapshot')),
    number         bigint      NOT NULL,  -- seq of the update, or version of the snapshot
    data           bytea       NOT NULL,
    reason         text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_quarantine_room ON room_quarantine (room, id);
