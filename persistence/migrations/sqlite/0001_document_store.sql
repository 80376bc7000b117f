-- The document store: snapshot versions and the append-only update log since the newest snapshot.
CREATE TABLE IF NOT EXISTS room_snapshots (
    room         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    snapshot     BLOB    NOT NULL,
    state_vector BLOB    NOT NULL,
    label        TEXT,
    created_at   REAL    NOT NULL,
    PRIMARY KEY (room, version)
);
CREATE TABLE IF NOT EXISTS room_updates (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    room       TEXT    NOT NULL,
    "update"   BLOB    NOT NULL,
    created_at REAL    NOT NULL
);
-- loads and compactions read one room's log in seq order
CREATE INDEX IF NOT EXISTS room_updates_room_seq ON room_updates (room, seq);
