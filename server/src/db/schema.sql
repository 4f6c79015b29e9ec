-- Kodama recording index, current schema (version 6). Times are µs since the
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
  path TEXT NOT NULL UNIQUE CHECK (path <> ''),
  start_us INTEGER NOT NULL,
  end_us INTEGER NOT NULL,
  -- Indexed (durable, complete-fragment) length of the file.
  bytes INTEGER NOT NULL,
  -- Length of ftyp + moov; the first fragment starts here.
  init_bytes INTEGER NOT NULL CHECK (init_bytes > 0),
  frames INTEGER NOT NULL CHECK (frames >= 0),
  codec TEXT NOT NULL,
  width INTEGER NOT NULL CHECK (width > 0),
  height INTEGER NOT NULL CHECK (height > 0),
  -- 1 while the recorder appends to it; 0 once closed or reconciled.
  open INTEGER NOT NULL DEFAULT 0 CHECK (open IN (0, 1)),
  fragments INTEGER NOT NULL DEFAULT 0 CHECK (fragments >= 0),
  -- 1 when written from GOPs the camera kept while offline and uploaded
  -- later (store-and-forward); its time range may lie before live segments
  -- written at the same moment.
  backfill INTEGER NOT NULL DEFAULT 0 CHECK (backfill IN (0, 1)),
  CHECK (end_us >= start_us),
  CHECK (bytes >= init_bytes)
);

CREATE INDEX segment_camera_start ON segment (camera_id, start_us);
CREATE INDEX segment_start ON segment (start_us);

-- One row per fragment (GOP): the seek index. Every fragment starts with a
-- keyframe at byte `offset` of its segment file.
CREATE TABLE fragment (
  segment_id INTEGER NOT NULL REFERENCES segment (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL CHECK (seq >= 0),
  start_us INTEGER NOT NULL,
  duration_us INTEGER NOT NULL CHECK (duration_us >= 0),
  offset INTEGER NOT NULL CHECK (offset > 0),
  len INTEGER NOT NULL CHECK (len > 0),
  frames INTEGER NOT NULL CHECK (frames >= 0),
  -- The keyframe's capture time (µs, camera clock) and sequence number on
  -- the camera; NULL for fragments indexed from files alone.
  capture_us INTEGER,
  first_seq INTEGER,
  PRIMARY KEY (segment_id, seq)
) WITHOUT ROWID;

CREATE INDEX fragment_capture ON fragment (capture_us);

-- Files whose segment rows are already deleted but which may still exist:
-- retention commits the row deletion and this row together, then unlinks the
-- file, then deletes this row. Start-up unlinks whatever is listed here
-- before looking for unindexed files (docs/design/recording.md, "Delete").
CREATE TABLE garbage (
  path TEXT PRIMARY KEY CHECK (path <> '')
) WITHOUT ROWID;

-- Forwarding to upstream servers (`[[upstream]]`): per upstream, camera and
-- lane (0 live, 1 backfill) the fragment up to which the upstream confirmed
-- storing the whole lane, as (segment id, fragment seq). Moves only forward,
-- on the upstream's acknowledgements (docs/design/forwarding.md).
CREATE TABLE upstream_watermark (
  -- The upstream's iroh endpoint id.
  upstream TEXT NOT NULL CHECK (upstream <> ''),
  -- The camera's iroh endpoint id.
  camera TEXT NOT NULL CHECK (camera <> ''),
  lane INTEGER NOT NULL CHECK (lane IN (0, 1)),
  segment_id INTEGER NOT NULL CHECK (segment_id >= 0),
  seq INTEGER NOT NULL CHECK (seq >= 0),
  updated_us INTEGER NOT NULL,
  PRIMARY KEY (upstream, camera, lane)
) WITHOUT ROWID;

-- Telemetry samples and events as the camera sent them (JSON), with the
-- wall time the recorder mapped them to and the capture time on the
-- camera's clock (NULL for rows stored before version 6). (camera,
-- capture time, document) identifies a row wherever it is forwarded, so
-- one received again is stored once. Ids never repeat (AUTOINCREMENT):
-- forwarding's watermarks are row ids.
CREATE TABLE telemetry (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  time_us INTEGER NOT NULL,
  capture_us INTEGER,
  json TEXT NOT NULL
);

CREATE INDEX telemetry_camera_time ON telemetry (camera_id, time_us);
CREATE UNIQUE INDEX telemetry_origin ON telemetry (camera_id, capture_us, json)
  WHERE capture_us IS NOT NULL;

CREATE TABLE event (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  time_us INTEGER NOT NULL,
  capture_us INTEGER,
  json TEXT NOT NULL
);

CREATE INDEX event_camera_time ON event (camera_id, time_us);
CREATE UNIQUE INDEX event_origin ON event (camera_id, capture_us, json)
  WHERE capture_us IS NOT NULL;

-- Forwarding telemetry and events to upstream servers: per upstream,
-- camera and kind (0 telemetry, 1 event) the row id up to which the
-- upstream confirmed storing every row of that camera and kind. Moves only
-- forward, on the upstream's acknowledgements (docs/design/forwarding.md).
CREATE TABLE upstream_aux_watermark (
  upstream TEXT NOT NULL CHECK (upstream <> ''),
  camera TEXT NOT NULL CHECK (camera <> ''),
  kind INTEGER NOT NULL CHECK (kind IN (0, 1)),
  row_id INTEGER NOT NULL CHECK (row_id >= 0),
  updated_us INTEGER NOT NULL,
  PRIMARY KEY (upstream, camera, kind)
) WITHOUT ROWID;

CREATE TABLE update_job (
  camera BLOB PRIMARY KEY CHECK (length(camera) = 32),
  bundle BLOB NOT NULL CHECK (length(bundle) = 32),
  size INTEGER NOT NULL CHECK (size > 0),
  -- NULL until the camera first answers the offer; else the UpdatePhase code.
  phase INTEGER CHECK (phase BETWEEN 0 AND 9),
  detail TEXT NOT NULL,
  started_unix INTEGER NOT NULL,
  -- JSON array of {"at_ms", "phase", "detail"}.
  history TEXT NOT NULL
) WITHOUT ROWID;
