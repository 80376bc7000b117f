-- Named versions (POST /api/rooms/{id}/versions) record who asked for them; automatic ones leave it NULL.
ALTER TABLE room_snapshots ADD COLUMN created_by text;
