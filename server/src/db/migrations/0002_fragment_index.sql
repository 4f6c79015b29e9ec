-- Version 2: a per-fragment seek index, so export and playback can start at
-- the keyframe at or before any time without opening files.

ALTER TABLE segment ADD COLUMN fragments INTEGER NOT NULL DEFAULT 0;

CREATE TABLE fragment (
  segment_id INTEGER NOT NULL REFERENCES segment (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  start_us INTEGER NOT NULL,
  duration_us INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  len INTEGER NOT NULL,
  frames INTEGER NOT NULL,
  PRIMARY KEY (segment_id, seq)
) WITHOUT ROWID;

-- Segments indexed by version 1 have no fragment rows; the recorder's
-- reconciliation re-reads those files (it treats a fragment count of 0 with
-- bytes beyond the init segment as needing a rescan).
