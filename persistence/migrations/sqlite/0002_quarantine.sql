-- Stored rows the CRDT engine could not apply (it failed, panicked, crashed or stalled on them), moved
-- out of room_updates / room_snapshots so that the room loads from the rest. Kept, never deleted.
CREATE TABLE IF NOT EXISTS room_quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    room           TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('update', 'snapshot')),
    number         INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    reason         TEXT    NOT NULL,
    quarantined_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS room_quarantine_room ON room_quarantine (room, id);
