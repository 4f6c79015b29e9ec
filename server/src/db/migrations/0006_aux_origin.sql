-- Version 6: telemetry and events are forwarded durably to upstream
-- servers, like recordings.
--
-- * Every row remembers its capture time on the camera's clock
--   (`capture_us`, NULL for rows stored before this version), and a camera
--   cannot hold the same document twice at the same capture time: the
--   origin's stable identity of a row is (camera, capture time, document),
--   so a row an upstream receives again after an outage is recognised and
--   stored once.
-- * Row ids never repeat (AUTOINCREMENT): a per-upstream watermark on the
--   row id says "the upstream has every row of this camera up to here",
--   and a table emptied by retention must not hand out ids below it again.
--
-- SQLite can neither add AUTOINCREMENT nor change a table's constraints in
-- place, so both tables are rebuilt (as in version 4; foreign keys are off
-- while migrations run).

CREATE TABLE telemetry_v6 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  time_us INTEGER NOT NULL,
  capture_us INTEGER,
  json TEXT NOT NULL
);

INSERT INTO telemetry_v6 (id, camera_id, time_us, capture_us, json)
  SELECT id, camera_id, time_us, NULL, json FROM telemetry;

CREATE TABLE event_v6 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  camera_id INTEGER NOT NULL REFERENCES camera (id),
  time_us INTEGER NOT NULL,
  capture_us INTEGER,
  json TEXT NOT NULL
);

INSERT INTO event_v6 (id, camera_id, time_us, capture_us, json)
  SELECT id, camera_id, time_us, NULL, json FROM event;

DROP TABLE telemetry;
DROP TABLE event;
ALTER TABLE telemetry_v6 RENAME TO telemetry;
ALTER TABLE event_v6 RENAME TO event;

CREATE INDEX telemetry_camera_time ON telemetry (camera_id, time_us);
CREATE UNIQUE INDEX telemetry_origin ON telemetry (camera_id, capture_us, json)
  WHERE capture_us IS NOT NULL;
CREATE INDEX event_camera_time ON event (camera_id, time_us);
CREATE UNIQUE INDEX event_origin ON event (camera_id, capture_us, json)
  WHERE capture_us IS NOT NULL;

-- Per upstream, camera and kind (0 telemetry, 1 event): the row id up to
-- which the upstream confirmed storing every row of that camera and kind.
CREATE TABLE upstream_aux_watermark (
  upstream TEXT NOT NULL CHECK (upstream <> ''),
  camera TEXT NOT NULL CHECK (camera <> ''),
  kind INTEGER NOT NULL CHECK (kind IN (0, 1)),
  row_id INTEGER NOT NULL CHECK (row_id >= 0),
  updated_us INTEGER NOT NULL,
  PRIMARY KEY (upstream, camera, kind)
) WITHOUT ROWID;
