-- Version 5: forwarding to upstream servers from the recordings. Per
-- upstream, camera and lane (0 live, 1 backfill) the newest fragment up to
-- which the upstream has confirmed storing every fragment of that lane, as
-- (segment id, fragment seq): each lane is written in order (one open
-- segment at a time, ids and seqs increasing), so this is a watermark. It
-- moves only forward and only on the upstream's `Stored` acknowledgements;
-- what lies beyond it is sent again after an outage or a restart.

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
