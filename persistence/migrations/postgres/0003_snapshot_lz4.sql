-- Snapshots are megabytes and written on every compaction: lz4 compresses them ~4x faster than the
-- default pglz (measured on a 5.7 MB snapshot: 27 ms against 101 ms to write, reads alike) for about
-- twice pglz's size (2.2 MB against 1.0 MB; uncompressed 5.7 MB). Applies to values written from now
-- on. Servers built without lz4 (or older than PostgreSQL 14) keep the default.
DO $$
BEGIN
    ALTER TABLE room_snapshots ALTER COLUMN snapshot SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'lz4 is not available: room_snapshots.snapshot keeps the default compression';
END $$;
