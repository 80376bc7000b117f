-- Export jobs: the exports table of 0002 becomes the queue workers claim from (FOR UPDATE SKIP LOCKED)
-- and stays the record people see. Inserts notify the channel collab_exports so idle workers wake.
ALTER TABLE exports
    ADD COLUMN options      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN max_attempts integer     NOT NULL DEFAULT 3,
    ADD COLUMN run_after    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN worker_id    text,
    ADD COLUMN result       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN started_at   timestamptz,
    ADD COLUMN completed_at timestamptz;

-- what a claim scans: the pending jobs, oldest first; and leases that may have run out
CREATE INDEX exports_pending ON exports (created_at) WHERE status = 'pending';
CREATE INDEX exports_leases ON exports (lease_expires_at) WHERE status = 'processing';
-- the REST listing: a room's recent exports
CREATE INDEX exports_room ON exports (room_id, created_at DESC);

CREATE FUNCTION collab_exports_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('collab_exports', NEW.id::text);
    RETURN NULL;
END
$$;
-- on insert only: a retried job is due after its backoff, which idle workers wait out by polling
CREATE TRIGGER exports_notify AFTER INSERT ON exports FOR EACH ROW EXECUTE FUNCTION collab_exports_notify();
