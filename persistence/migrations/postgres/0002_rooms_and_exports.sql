-- Room metadata for the REST API and export jobs. Only the keys are indexed here: the work that adds
-- the queries over these tables adds the indexes for its access paths alongside them.

CREATE TABLE rooms (
    id             text        PRIMARY KEY,  -- the room name of /ws/{room}
    name           text        NOT NULL DEFAULT '',
    owner          text,                     -- principal (JWT sub); NULL for rooms made without auth
    visibility     text        NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    password_hash  text,                     -- bcrypt
    settings       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE room_participants (
    room_id   text        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    principal text        NOT NULL,
    role      text        NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, principal)
);

CREATE TABLE exports (
    id               uuid        PRIMARY KEY,
    room_id          text        NOT NULL,
    format           text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    error            text,
    result_key       text,                   -- where the blob store keeps the file
    requested_by     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
