-- Version 1: cameras, segments, telemetry and events.

CREATE TABLE camera (
  id INTEGER PRIMARY KEY,
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
  bytes INTEGER NOT NULL,
  init_bytes INTEGER NOT NULL,
  frames INTEGER NOT NULL,
  codec TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  open INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX segment_camera_start ON segment (camera_id, start_us);
CREATE INDEX segment_start ON segment (start_us);

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
