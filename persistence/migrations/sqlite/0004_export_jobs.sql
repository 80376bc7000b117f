-- Export jobs (the record people see through the REST API) and the queue workers claim from.
-- Times are Unix seconds. A claim is one UPDATE ... WHERE id = (SELECT ... LIMIT 1) inside BEGIN IMMEDIATE.
CREATE TABLE IF NOT EXISTS exports (
    id               TEXT    PRIMARY KEY,
    room_id          TEXT    NOT NULL,
    format           TEXT    NOT NULL,
    options          TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    run_after        REAL    NOT NULL,
    worker_id        TEXT,
    lease_expires_at REAL,
    error            TEXT,
    result_key       TEXT,
    result           TEXT    NOT NULL DEFAULT '{}',
    requested_by     TEXT,
    created_at       REAL    NOT NULL,
    started_at       REAL,
    completed_at     REAL
);
-- what a claim scans: the due pending jobs, oldest first; and leases that may have run out
CREATE INDEX IF NOT EXISTS exports_pending ON exports (created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS exports_leases ON exports (lease_expires_at) WHERE status = 'processing';
-- the REST listing: a room's recent exports
CREATE INDEX IF NOT EXISTS exports_room ON exports (room_id, created_at);
