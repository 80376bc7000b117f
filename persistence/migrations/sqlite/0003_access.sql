-- Registered rooms and their participants (persistence.room_store). Participants are never deleted
-- while the room exists: a removed one keeps its row with left_at set.
CREATE TABLE IF NOT EXISTS rooms (
    id             TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL DEFAULT '',
    owner          TEXT    NOT NULL,
    visibility     TEXT    NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    password_hash  TEXT,
    settings       TEXT    NOT NULL DEFAULT '{}',
    created_at     REAL    NOT NULL,
    last_active_at REAL    NOT NULL,
    password_epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS room_participants (
    room_id    TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    principal  TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    granted_by TEXT NOT NULL DEFAULT 'owner' CHECK (granted_by IN ('owner', 'password', 'invite')),
    joined_at  REAL NOT NULL,
    left_at    REAL,
    PRIMARY KEY (room_id, principal)
);
-- GET /api/rooms: the rooms a user owns, and those they take part in, in id order
CREATE INDEX IF NOT EXISTS rooms_owner_id ON rooms (owner, id);
CREATE INDEX IF NOT EXISTS room_participants_active ON room_participants (principal, room_id) WHERE left_at IS NULL;
