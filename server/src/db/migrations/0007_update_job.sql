-- Version 7: firmware update jobs (server::updates) survive a server
-- restart: one row per camera, rewritten on every phase change the camera
-- reports (not on byte progress; the camera says what it holds on reconnect).
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
