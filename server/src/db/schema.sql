-- Kodama recording index, current schema (version 3). Times are µs since the
-- Unix epoch (UTC, wall clock as estimated by the recorder); paths are
-- relative to <data>/recordings. See docs/design/recording.md.

CREATE TABLE camera (
  id INTEGER PRIMARY KEY,
  -- iroh endpoint id (public key) as printed by iroh.
  endpoint TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  last_seen_us INTEGER NOT NULL
);

CREATE TABLE segment (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  path TEXT NOT NULL UNIQUE,
  start_us INTEGER NOT NULL,
  end_us INTEGER NOT NULL,
  -- Indexed (durable, complete-fragment) length of the file.
  bytes INTEGER NOT NULL,
  -- Length of ftyp + moov; the first fragment starts here.
  init_bytes INTEGER NOT NULL,
  frames INTEGER NOT NULL,
  codec TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  -- 1 while the recorder appends to it; 0 once closed or reconciled.
  open INTEGER NOT NULL DEFAULT 0,
  fragments INTEGER NOT NULL DEFAULT 0,
  -- 1 when written from GOPs the camera kept while offline and uploaded
  -- later (store-and-forward); its time range may lie before live segments
  -- written at the same moment.
  backfill INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX segment_camera_start ON segment (camera_id, start_us);
CREATE INDEX segment_start ON segment (start_us);

-- One row per fragment (GOP): the seek index. Every fragment starts with a
-- keyframe at byte `offset` of its segment file.
CREATE TABLE fragment (
  segment_id INTEGER NOT NULL REFERENCES segment (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  start_us INTEGER NOT NULL,
  duration_us INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  len INTEGER NOT NULL,
  frames INTEGER NOT NULL,
  -- The keyframe's capture time (µs, camera clock) and sequence number on
  -- the camera; NULL for fragments indexed from files alone.
  capture_us INTEGER,
  first_seq INTEGER,
  PRIMARY KEY (segment_id, seq)
) WITHOUT ROWID;

CREATE INDEX fragment_capture ON fragment (capture_us);

CREATE TABLE telemetry (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  time_us INTEGER NOT NULL,
  json TEXT NOT NULL
);

CREATE INDEX telemetry_camera_time ON telemetry (camera_id, time_us);

CREATE TABLE event (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  time_us INTEGER NOT NULL,
  json TEXT NOT NULL
);

CREATE INDEX event_camera_time ON event (camera_id, time_us);
