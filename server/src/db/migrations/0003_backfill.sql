-- Version 3: store-and-forward. Segments written from GOPs a camera recorded
-- while offline and uploaded later are marked, and every fragment remembers
-- where it came from on the camera (capture time and sequence number of its
-- keyframe), so a GOP uploaded twice is recognised and the recording can be
-- checked frame by frame. Rows indexed from files alone (reconcile) have no
-- origin (NULL): the file does not carry it.

ALTER TABLE segment ADD COLUMN backfill INTEGER NOT NULL DEFAULT 0;

ALTER TABLE fragment ADD COLUMN capture_us INTEGER;
ALTER TABLE fragment ADD COLUMN first_seq INTEGER;

CREATE INDEX fragment_capture ON fragment (capture_us);
