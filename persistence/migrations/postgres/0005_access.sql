-- Access (persistence.room_store): owners are always known, participants record how they got in and
-- when they left (a removed participant keeps its row, with left_at set), and a room's password epoch
-- voids room tokens granted by an older password.
UPDATE rooms SET owner = '' WHERE owner IS NULL;
ALTER TABLE rooms ALTER COLUMN owner SET NOT NULL;
ALTER TABLE rooms ADD COLUMN password_epoch bigint NOT NULL DEFAULT 0;

ALTER TABLE room_participants RENAME COLUMN added_at TO joined_at;
ALTER TABLE room_participants ADD COLUMN granted_by text NOT NULL DEFAULT 'owner'
    CHECK (granted_by IN ('owner', 'password', 'invite'));
ALTER TABLE room_participants ADD COLUMN left_at timestamptz;

-- GET /api/rooms: the rooms a user owns, and those they take part in, in id order
CREATE INDEX rooms_owner_id ON rooms (owner, id);
CREATE INDEX room_participants_active ON room_participants (principal, room_id) WHERE left_at IS NULL;
