-- Version 4: the index guards its own invariants with CHECK constraints, and
-- a `garbage` table makes deleting a recording one atomic step: the segment's
-- rows are deleted and its path recorded in one transaction, then the file is
-- unlinked and the garbage row forgotten. A crash in between leaves a garbage
-- row, and the next start unlinks that file instead of re-indexing it.
--
-- SQLite cannot add a CHECK to an existing table, so `segment` and `fragment`
-- are rebuilt (the "12 steps" of https://sqlite.org/lang_altertable.html;
-- foreign keys are off while migrations run, see Db::migrate).

CREATE TABLE segment_v4 (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  path TEXT NOT NULL UNIQUE CHECK (path <> ''),
  start_us INTEGER NOT NULL,
  end_us INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  init_bytes INTEGER NOT NULL CHECK (init_bytes > 0),
  frames INTEGER NOT NULL CHECK (frames >= 0),
  codec TEXT NOT NULL,
  width INTEGER NOT NULL CHECK (width > 0),
  height INTEGER NOT NULL CHECK (height > 0),
  open INTEGER NOT NULL DEFAULT 0 CHECK (open IN (0, 1)),
  fragments INTEGER NOT NULL DEFAULT 0 CHECK (fragments >= 0),
  backfill INTEGER NOT NULL DEFAULT 0 CHECK (backfill IN (0, 1)),
  CHECK (end_us >= start_us),
  CHECK (bytes >= init_bytes)
);

INSERT INTO segment_v4 (id, camera_id, path, start_us, end_us, bytes, init_bytes, frames,
    codec, width, height, open, fragments, backfill)
  SELECT id, camera_id, path, start_us, end_us, bytes, init_bytes, frames,
    codec, width, height, open, fragments, backfill FROM segment;

CREATE TABLE fragment_v4 (
  segment_id INTEGER NOT NULL REFERENCES segment (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL CHECK (seq >= 0),
  start_us INTEGER NOT NULL,
  duration_us INTEGER NOT NULL CHECK (duration_us >= 0),
  offset INTEGER NOT NULL CHECK (offset > 0),
  len INTEGER NOT NULL CHECK (len > 0),
  frames INTEGER NOT NULL CHECK (frames >= 0),
  capture_us INTEGER,
  first_seq INTEGER,
  PRIMARY KEY (segment_id, seq)
) WITHOUT ROWID;

INSERT INTO fragment_v4 (segment_id, seq, start_us, duration_us, offset, len, frames,
    capture_us, first_seq)
  SELECT segment_id, seq, start_us, duration_us, offset, len, frames, capture_us, first_seq
  FROM fragment;

DROP TABLE fragment;
DROP TABLE segment;
ALTER TABLE segment_v4 RENAME TO segment;
ALTER TABLE fragment_v4 RENAME TO fragment;

CREATE INDEX segment_camera_start ON segment (camera_id, start_us);
CREATE INDEX segment_start ON segment (start_us);
CREATE INDEX fragment_capture ON fragment (capture_us);

CREATE TABLE garbage (
  path TEXT PRIMARY KEY CHECK (path <> '')
) WITHOUT ROWID;
