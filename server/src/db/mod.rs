//! The recording index in SQLite: cameras, segments, their fragments (the
//! seek index), telemetry and events. Plain SQL, no caching, no I/O besides
//! the database; the recorder and the API each own a [`Db`] connection (WAL
//! lets the API read while the recorder writes).
//!
//! `schema.sql` is the current schema. `migrations/NNNN_*.sql` take a
//! database from version N-1 to N (`PRAGMA user_version`); a test checks that
//! a migrated database matches a fresh one. Times are µs since the Unix
//! epoch; segment paths are relative to `<data>/recordings`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// The current schema, applied to a new database.
const SCHEMA: &str = include_str!("schema.sql");

/// Upgrades: `MIGRATIONS[i]` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_fragment_index.sql"),
    include_str!("migrations/0003_backfill.sql"),
    include_str!("migrations/0004_checks_and_garbage.sql"),
    include_str!("migrations/0005_upstream_watermark.sql"),
    include_str!("migrations/0006_aux_origin.sql"),
    include_str!("migrations/0007_update_job.sql"),
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite reported an error (including a full disk: `SQLITE_FULL`).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer Kodama.
    #[error("database schema version {found} is newer than this server's {supported}; upgrade kodama-server")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Version this code knows.
        supported: i64,
    },
    /// A migration step failed.
    #[error("migrating the database to version {version}: {source}")]
    Migration {
        /// Target version of the failing step.
        version: i64,
        /// The error.
        source: rusqlite::Error,
    },
}

impl DbError {
    /// Whether the error is SQLite's "database or disk is full".
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

/// A camera row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CameraRow {
    /// Row id.
    pub id: i64,
    /// iroh endpoint id.
    pub endpoint: String,
    /// Name.
    pub name: String,
    /// Last time the recorder heard from it.
    pub last_seen_us: i64,
}

/// A segment row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentRow {
    /// Row id.
    pub id: i64,
    /// Camera row id.
    pub camera_id: i64,
    /// Path relative to the recordings root.
    pub path: String,
    /// Wall-clock start.
    pub start_us: i64,
    /// Wall-clock end (start of the last fragment plus its duration).
    pub end_us: i64,
    /// Indexed length of the file.
    pub bytes: i64,
    /// Length of the init segment.
    pub init_bytes: i64,
    /// Frames indexed.
    pub frames: i64,
    /// Fragments indexed.
    pub fragments: i64,
    /// RFC 6381 codec string.
    pub codec: String,
    /// Width in pixels.
    pub width: i64,
    /// Height in pixels.
    pub height: i64,
    /// Still being appended to.
    pub open: bool,
    /// Written from GOPs the camera uploaded after an outage.
    pub backfill: bool,
}

/// A new segment, as the recorder creates it.
#[derive(Debug, Clone)]
pub struct NewSegment<'a> {
    /// Camera row id.
    pub camera_id: i64,
    /// Path relative to the recordings root.
    pub path: &'a str,
    /// Wall-clock start.
    pub start_us: i64,
    /// Length of the init segment (the file's length so far).
    pub init_bytes: i64,
    /// Codec string.
    pub codec: &'a str,
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// Whether the recorder keeps appending (false when re-indexing).
    pub open: bool,
    /// Written from backfilled GOPs.
    pub backfill: bool,
}

/// A fragment row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FragmentRow {
    /// `mfhd` sequence number.
    pub seq: i64,
    /// Wall-clock time of its keyframe.
    pub start_us: i64,
    /// Duration.
    pub duration_us: i64,
    /// Byte offset in the file.
    pub offset: i64,
    /// Byte length (prft + moof + mdat).
    pub len: i64,
    /// Frames.
    pub frames: i64,
}

/// Where a fragment came from on the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentOrigin {
    /// Capture time of the keyframe, µs on the camera's clock.
    pub capture_us: i64,
    /// The keyframe's sequence number.
    pub first_seq: i64,
}

/// A recorded fragment as forwarding reads it back for an upstream: where
/// its bytes lie and where it came from on the camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardFragment {
    /// Segment row id.
    pub segment_id: i64,
    /// `mfhd` sequence number in the segment.
    pub seq: i64,
    /// The segment's path relative to the recordings root.
    pub path: String,
    /// Length of the segment's init segment.
    pub init_bytes: i64,
    /// Byte offset of the fragment in the file.
    pub offset: i64,
    /// Byte length of the fragment.
    pub len: i64,
    /// Video frames.
    pub frames: i64,
    /// Where it came from on the camera (`None` when indexed from the file alone).
    pub origin: Option<FragmentOrigin>,
}

/// Which lane of a camera's recording a watermark follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordedLane {
    /// Live segments.
    Live,
    /// Segments written from the camera's own backfill.
    Backfill,
}

impl RecordedLane {
    /// Both lanes.
    pub const ALL: [RecordedLane; 2] = [RecordedLane::Live, RecordedLane::Backfill];

    fn code(self) -> i64 {
        match self {
            RecordedLane::Live => 0,
            RecordedLane::Backfill => 1,
        }
    }
}

/// Which side table an auxiliary row goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuxKind {
    /// Telemetry samples (including GPS fixes).
    Telemetry,
    /// Events.
    Event,
}

impl AuxKind {
    /// Both kinds.
    pub const ALL: [AuxKind; 2] = [AuxKind::Telemetry, AuxKind::Event];

    fn table(self) -> &'static str {
        match self {
            AuxKind::Telemetry => "telemetry",
            AuxKind::Event => "event",
        }
    }

    fn code(self) -> i64 {
        match self {
            AuxKind::Telemetry => 0,
            AuxKind::Event => 1,
        }
    }

    /// The kind of frames on `channel`, if it carries telemetry or events.
    pub fn of_channel(channel: kodama_proto::Channel) -> Option<AuxKind> {
        match channel {
            kodama_proto::Channel::Telemetry => Some(AuxKind::Telemetry),
            kodama_proto::Channel::Event => Some(AuxKind::Event),
            _ => None,
        }
    }

    /// The channel its frames travel on.
    pub fn channel(self) -> kodama_proto::Channel {
        match self {
            AuxKind::Telemetry => kodama_proto::Channel::Telemetry,
            AuxKind::Event => kodama_proto::Channel::Event,
        }
    }
}

/// A telemetry or event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxRow {
    /// Wall-clock time.
    pub time_us: i64,
    /// Capture time on the camera's clock (`None` for rows stored before
    /// schema version 6).
    pub capture_us: Option<i64>,
    /// The JSON document as received.
    pub json: String,
}

/// A telemetry or event row as forwarding reads it for an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAux {
    /// Row id (increasing in the order rows were stored).
    pub id: i64,
    /// Capture time on the camera's clock (`None`: stored before schema
    /// version 6, cannot be identified upstream).
    pub capture_us: Option<i64>,
    /// The JSON document.
    pub json: String,
}

/// A telemetry or event row to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAux<'a> {
    /// Which table.
    pub kind: AuxKind,
    /// Wall-clock time.
    pub time_us: i64,
    /// Capture time on the camera's clock.
    pub capture_us: i64,
    /// The JSON document.
    pub json: &'a str,
}

/// What the recorder commits at once (see [`Db::commit_batch`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexBatch {
    /// Fragments written, by segment id.
    pub fragments: Vec<(i64, FragmentRow, FragmentOrigin)>,
    /// Cameras heard from: row id, wall time.
    pub seen: Vec<(i64, i64)>,
}

impl IndexBatch {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.fragments.is_empty() && self.seen.is_empty()
    }
}

/// Inserts one fragment row and extends its segment's row to cover it.
fn insert_fragment(
    tx: &rusqlite::Transaction<'_>,
    segment_id: i64,
    f: &FragmentRow,
    origin: Option<FragmentOrigin>,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO fragment (segment_id, seq, start_us, duration_us, offset, len, frames,
           capture_us, first_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        segment_id,
        f.seq,
        f.start_us,
        f.duration_us,
        f.offset,
        f.len,
        f.frames,
        origin.map(|o| o.capture_us),
        origin.map(|o| o.first_seq)
    ])?;
    tx.prepare_cached(
        "UPDATE segment SET end_us = max(end_us, ?2), bytes = max(bytes, ?3),
           frames = frames + ?4, fragments = fragments + 1 WHERE id = ?1",
    )?
    .execute(params![
        segment_id,
        f.start_us + f.duration_us,
        f.offset + f.len,
        f.frames
    ])?;
    Ok(())
}

/// One connection to the index.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

fn segment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SegmentRow> {
    Ok(SegmentRow {
        id: r.get(0)?,
        camera_id: r.get(1)?,
        path: r.get(2)?,
        start_us: r.get(3)?,
        end_us: r.get(4)?,
        bytes: r.get(5)?,
        init_bytes: r.get(6)?,
        frames: r.get(7)?,
        fragments: r.get(8)?,
        codec: r.get(9)?,
        width: r.get(10)?,
        height: r.get(11)?,
        open: r.get(12)?,
        backfill: r.get(13)?,
    })
}

const SEGMENT_COLUMNS: &str =
    "id, camera_id, path, start_us, end_us, bytes, init_bytes, frames, fragments, codec, width, height, open, backfill";

/// A camera's firmware update job as stored (`update_job`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateJobRow {
    /// The camera's node id.
    pub camera: [u8; 32],
    /// BLAKE3 of the bundle.
    pub bundle: [u8; 32],
    /// The bundle's size in bytes.
    pub size: u64,
    /// The camera's last phase (`UpdatePhase` code), `None` before it answered.
    pub phase: Option<u8>,
    /// The camera's last word.
    pub detail: String,
    /// When the job started (Unix seconds).
    pub started_unix: u64,
    /// The phase history, JSON.
    pub history: String,
}

impl Db {
    /// Records `job`, replacing the camera's previous one.
    pub fn save_update_job(&self, job: &UpdateJobRow) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO update_job (camera, bundle, size, phase, detail, started_unix, history)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (camera) DO UPDATE SET bundle = excluded.bundle, size = excluded.size,
               phase = excluded.phase, detail = excluded.detail,
               started_unix = excluded.started_unix, history = excluded.history",
            rusqlite::params![
                &job.camera[..],
                &job.bundle[..],
                i64::try_from(job.size).unwrap_or(i64::MAX),
                job.phase,
                job.detail,
                i64::try_from(job.started_unix).unwrap_or(i64::MAX),
                job.history,
            ],
        )?;
        Ok(())
    }

    /// Every stored update job (rows that do not decode are skipped).
    pub fn update_jobs(&self) -> Result<Vec<UpdateJobRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT camera, bundle, size, phase, detail, started_unix, history FROM update_job",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<u8>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut jobs = Vec::new();
        for row in rows {
            let (camera, bundle, size, phase, detail, started_unix, history) = row?;
            let (Ok(camera), Ok(bundle)) = (camera.try_into(), bundle.try_into()) else {
                continue;
            };
            jobs.push(UpdateJobRow {
                camera,
                bundle,
                size: u64::try_from(size).unwrap_or(0),
                phase,
                detail,
                started_unix: u64::try_from(started_unix).unwrap_or(0),
                history,
            });
        }
        Ok(jobs)
    }

    /// Opens (creating if needed) and migrates the index at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// An in-memory index (tests, benchmarks).
    pub fn open_in_memory() -> Result<Db, DbError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Db, DbError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL: readers (the API) never block the writer (the recorder).
        // synchronous=NORMAL: commits are not fsynced; the segment files are,
        // and recovery re-extends the index from them (see recording.md).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Keep the WAL small: checkpoint every ~1 MB and truncate it back to
        // 1 MB afterwards, so on a small or full disk the index does not hold
        // space that retention could free (SQLite defaults: 4 MB, unlimited).
        conn.pragma_update(None, "wal_autocheckpoint", 256)?;
        conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(DbError::TooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 0 {
            let tx = conn.transaction()?;
            let empty: i64 =
                tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            if empty == 0 {
                tx.execute_batch(SCHEMA)
                    .map_err(|source| DbError::Migration {
                        version: SCHEMA_VERSION,
                        source,
                    })?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()?;
                return Ok(Db { conn });
            }
        }
        Self::migrate(&mut conn, version, SCHEMA_VERSION)?;
        Ok(Db { conn })
    }

    /// Applies migrations from `from` up to `to`, one transaction each.
    ///
    /// Foreign keys are off meanwhile (a migration may rebuild a referenced
    /// table, which would otherwise cascade) and checked before each commit.
    fn migrate(conn: &mut Connection, from: i64, to: i64) -> Result<(), DbError> {
        conn.pragma_update(None, "foreign_keys", false)?;
        let result = (|| {
            for version in from + 1..=to {
                let tx = conn.transaction()?;
                let sql = MIGRATIONS[(version - 1) as usize];
                tx.execute_batch(sql)
                    .map_err(|source| DbError::Migration { version, source })?;
                let dangling: i64 = tx
                    .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                        r.get(0)
                    })
                    .map_err(|source| DbError::Migration { version, source })?;
                if dangling > 0 {
                    return Err(DbError::Migration {
                        version,
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                            Some(format!("{dangling} rows with dangling foreign keys")),
                        ),
                    });
                }
                tx.pragma_update(None, "user_version", version)?;
                tx.commit()?;
            }
            Ok(())
        })();
        conn.pragma_update(None, "foreign_keys", true)?;
        result
    }

    /// Checkpoints the WAL into the database and truncates it (after
    /// retention freed space on a full disk).
    pub fn checkpoint(&self) -> Result<(), DbError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// The underlying connection (for tests that inspect the schema).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Creates or renames a camera and marks it seen; returns its row id.
    pub fn upsert_camera(&self, endpoint: &str, name: &str, seen_us: i64) -> Result<i64, DbError> {
        Ok(self.conn.query_row(
            "INSERT INTO camera (endpoint, name, last_seen_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (endpoint) DO UPDATE SET name = excluded.name,
               last_seen_us = max(last_seen_us, excluded.last_seen_us)
             RETURNING id",
            params![endpoint, name, seen_us],
            |r| r.get(0),
        )?)
    }

    /// The row id of a camera, creating it (named after its endpoint) if it
    /// is unknown; an existing name is kept. Used when re-indexing files.
    pub fn ensure_camera(&self, endpoint: &str, seen_us: i64) -> Result<i64, DbError> {
        Ok(self.conn.query_row(
            "INSERT INTO camera (endpoint, name, last_seen_us) VALUES (?1, ?1, ?2)
             ON CONFLICT (endpoint) DO UPDATE SET last_seen_us = max(last_seen_us, excluded.last_seen_us)
             RETURNING id",
            params![endpoint, seen_us],
            |r| r.get(0),
        )?)
    }

    /// All cameras, by name.
    pub fn cameras(&self) -> Result<Vec<CameraRow>, DbError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, endpoint, name, last_seen_us FROM camera ORDER BY name, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(CameraRow {
                id: r.get(0)?,
                endpoint: r.get(1)?,
                name: r.get(2)?,
                last_seen_us: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts a segment; returns its id.
    pub fn insert_segment(&self, s: &NewSegment<'_>) -> Result<i64, DbError> {
        self.conn.execute(
            "INSERT INTO segment (camera_id, path, start_us, end_us, bytes, init_bytes, frames,
               codec, width, height, open, fragments, backfill)
             VALUES (?1, ?2, ?3, ?3, ?4, ?4, 0, ?5, ?6, ?7, ?8, 0, ?9)",
            params![
                s.camera_id,
                s.path,
                s.start_us,
                s.init_bytes,
                s.codec,
                s.width,
                s.height,
                s.open,
                s.backfill
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Indexes fragments found in a segment file (reconciliation: their
    /// origin on the camera is unknown), in one transaction. The fragments'
    /// bytes are durable (invariant 1).
    pub fn add_fragments(
        &mut self,
        segment_id: i64,
        fragments: &[FragmentRow],
    ) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        for f in fragments {
            insert_fragment(&tx, segment_id, f, None)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Commits what the recorder wrote since its last commit, in one
    /// transaction: fragments (whose bytes it has synced, invariant 1) with
    /// where they came from on the camera, and when it last heard from each
    /// camera.
    pub fn commit_batch(&mut self, batch: &IndexBatch) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        for (segment_id, f, origin) in &batch.fragments {
            insert_fragment(&tx, *segment_id, f, Some(*origin))?;
        }
        {
            let mut seen = tx.prepare_cached(
                "UPDATE camera SET last_seen_us = max(last_seen_us, ?2) WHERE id = ?1",
            )?;
            for (id, us) in &batch.seen {
                seen.execute(params![id, us])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The most frames any fragment of `camera_id` holds for the GOP whose
    /// keyframe was captured at `capture_us` (camera clock), if one exists:
    /// how the recorder recognises a GOP it already has.
    pub fn frames_recorded_at(
        &self,
        camera_id: i64,
        capture_us: i64,
    ) -> Result<Option<i64>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT max(f.frames) FROM fragment f JOIN segment s ON s.id = f.segment_id
                 WHERE s.camera_id = ?1 AND f.capture_us = ?2",
            )?
            .query_row(params![camera_id, capture_us], |r| r.get(0))?)
    }

    /// Every fragment of a camera with a known origin, as (keyframe capture
    /// µs, keyframe sequence, frames, backfilled), in capture order.
    pub fn fragment_origins(&self, camera_id: i64) -> Result<Vec<(i64, i64, i64, bool)>, DbError> {
        let mut st = self.conn.prepare_cached(
            "SELECT f.capture_us, f.first_seq, f.frames, s.backfill
             FROM fragment f JOIN segment s ON s.id = f.segment_id
             WHERE s.camera_id = ?1 AND f.capture_us IS NOT NULL AND f.first_seq IS NOT NULL
             ORDER BY f.capture_us",
        )?;
        let rows = st.query_map(params![camera_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Where forwarding to `upstream` stands for `camera`'s `lane`: the
    /// (segment id, fragment seq) up to which the upstream confirmed it has
    /// everything, if forwarding ever started.
    pub fn upstream_watermark(
        &self,
        upstream: &str,
        camera: &str,
        lane: RecordedLane,
    ) -> Result<Option<(i64, i64)>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT segment_id, seq FROM upstream_watermark
                 WHERE upstream = ?1 AND camera = ?2 AND lane = ?3",
            )?
            .query_row(params![upstream, camera, lane.code()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// The cameras forwarding to `upstream` has a watermark for.
    pub fn upstream_cameras(&self, upstream: &str) -> Result<Vec<String>, DbError> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT camera FROM upstream_watermark WHERE upstream = ?1 ORDER BY camera",
        )?;
        let rows = st.query_map(params![upstream], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a watermark forward (never back: a stale writer cannot undo
    /// a newer one).
    pub fn set_upstream_watermark(
        &self,
        upstream: &str,
        camera: &str,
        lane: RecordedLane,
        at: (i64, i64),
        now_us: i64,
    ) -> Result<(), DbError> {
        self.conn
            .prepare_cached(
                "INSERT INTO upstream_watermark (upstream, camera, lane, segment_id, seq, updated_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (upstream, camera, lane) DO UPDATE SET
                   segment_id = excluded.segment_id, seq = excluded.seq, updated_us = excluded.updated_us
                 WHERE (excluded.segment_id, excluded.seq) > (segment_id, seq)",
            )?
            .execute(params![upstream, camera, lane.code(), at.0, at.1, now_us])?;
        Ok(())
    }

    /// The newest fragment of `camera`'s `lane`, as (segment id, seq).
    pub fn newest_fragment(
        &self,
        camera: &str,
        lane: RecordedLane,
    ) -> Result<Option<(i64, i64)>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT f.segment_id, f.seq FROM fragment f
                 JOIN segment s ON s.id = f.segment_id JOIN camera c ON c.id = s.camera_id
                 WHERE c.endpoint = ?1 AND s.backfill = ?2
                 ORDER BY f.segment_id DESC, f.seq DESC LIMIT 1",
            )?
            .query_row(params![camera, lane.code()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Up to `limit` fragments of `camera`'s `lane` after `after` (segment
    /// id, seq), in the order they were written.
    pub fn fragments_after(
        &self,
        camera: &str,
        lane: RecordedLane,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<ForwardFragment>, DbError> {
        let mut st = self.conn.prepare_cached(
            "SELECT f.segment_id, f.seq, s.path, s.init_bytes, f.offset, f.len, f.frames,
               f.capture_us, f.first_seq
             FROM fragment f JOIN segment s ON s.id = f.segment_id JOIN camera c ON c.id = s.camera_id
             WHERE c.endpoint = ?1 AND s.backfill = ?2 AND (f.segment_id, f.seq) > (?3, ?4)
             ORDER BY f.segment_id, f.seq LIMIT ?5",
        )?;
        let rows = st.query_map(params![camera, lane.code(), after.0, after.1, limit], |r| {
            let capture_us: Option<i64> = r.get(7)?;
            let first_seq: Option<i64> = r.get(8)?;
            Ok(ForwardFragment {
                segment_id: r.get(0)?,
                seq: r.get(1)?,
                path: r.get(2)?,
                init_bytes: r.get(3)?,
                offset: r.get(4)?,
                len: r.get(5)?,
                frames: r.get(6)?,
                origin: capture_us
                    .zip(first_seq)
                    .map(|(capture_us, first_seq)| FragmentOrigin {
                        capture_us,
                        first_seq,
                    }),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a segment closed.
    pub fn close_segment(&self, id: i64) -> Result<(), DbError> {
        self.conn
            .execute("UPDATE segment SET open = 0 WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Forgets a segment and its fragments (the file is unlinked first).
    pub fn delete_segment(&mut self, id: i64) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM fragment WHERE segment_id = ?1", params![id])?;
        tx.execute("DELETE FROM segment WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets segments whose files are about to be unlinked, recording their
    /// paths in `garbage` in the same transaction (the "Delete" order of
    /// docs/design/recording.md). The caller unlinks the files next, then
    /// calls [`Db::forget_garbage`].
    pub fn retire_segments(&mut self, segments: &[(i64, &str)]) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        {
            let mut frags = tx.prepare_cached("DELETE FROM fragment WHERE segment_id = ?1")?;
            let mut seg = tx.prepare_cached("DELETE FROM segment WHERE id = ?1")?;
            let mut garbage =
                tx.prepare_cached("INSERT OR IGNORE INTO garbage (path) VALUES (?1)")?;
            for (id, path) in segments {
                frags.execute(params![id])?;
                seg.execute(params![id])?;
                garbage.execute(params![path])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Paths retired but not yet known to be unlinked.
    pub fn garbage(&self) -> Result<Vec<String>, DbError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT path FROM garbage ORDER BY path")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets retired paths whose files are gone.
    pub fn forget_garbage(&mut self, paths: &[String]) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM garbage WHERE path = ?1")?;
            for p in paths {
                st.execute(params![p])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Indexed bytes per camera row id (retention's starting totals).
    pub fn bytes_per_camera(&self) -> Result<Vec<(i64, i64)>, DbError> {
        let mut st = self.conn.prepare_cached(
            "SELECT camera_id, coalesce(sum(bytes), 0) FROM segment GROUP BY camera_id",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` segments, oldest first, starting after the segment with
    /// key `(start_us, id)` (keyset paging, so retention reads only as many
    /// rows as it deletes, plus one page).
    pub fn oldest_segments(
        &self,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<SegmentRow>, DbError> {
        let (start, id) = after.unwrap_or((i64::MIN, i64::MIN));
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM segment WHERE (start_us, id) > (?1, ?2)
             ORDER BY start_us, id LIMIT ?3"
        ))?;
        let rows = st.query_map(params![start, id, limit], segment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Resets a segment's index (before re-indexing it from its file).
    pub fn reset_segment(&mut self, id: i64, init_bytes: i64) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM fragment WHERE segment_id = ?1", params![id])?;
        tx.execute(
            "UPDATE segment SET end_us = start_us, bytes = ?2, init_bytes = ?2, frames = 0, fragments = 0
             WHERE id = ?1",
            params![id, init_bytes],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every segment, oldest first.
    pub fn all_segments(&self) -> Result<Vec<SegmentRow>, DbError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM segment ORDER BY start_us, id"
        ))?;
        let rows = st.query_map([], segment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One segment.
    pub fn segment(&self, id: i64) -> Result<Option<SegmentRow>, DbError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM segment WHERE id = ?1"
        ))?;
        Ok(st.query_row(params![id], segment_from_row).optional()?)
    }

    /// A camera's segments overlapping `[start, end)`, oldest first.
    pub fn segments_between(
        &self,
        camera_id: i64,
        start_us: i64,
        end_us: i64,
    ) -> Result<Vec<SegmentRow>, DbError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM segment
             WHERE camera_id = ?1 AND start_us < ?3 AND end_us >= ?2
             ORDER BY start_us, id"
        ))?;
        let rows = st.query_map(params![camera_id, start_us, end_us], segment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The fragments of a segment, in file order.
    pub fn fragments(&self, segment_id: i64) -> Result<Vec<FragmentRow>, DbError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, start_us, duration_us, offset, len, frames FROM fragment
             WHERE segment_id = ?1 ORDER BY offset",
        )?;
        let rows = st.query_map(params![segment_id], |r| {
            Ok(FragmentRow {
                seq: r.get(0)?,
                start_us: r.get(1)?,
                duration_us: r.get(2)?,
                offset: r.get(3)?,
                len: r.get(4)?,
                frames: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Bytes indexed in total and for one camera.
    pub fn total_bytes(&self, camera_id: Option<i64>) -> Result<i64, DbError> {
        Ok(match camera_id {
            Some(c) => self.conn.query_row(
                "SELECT coalesce(sum(bytes), 0) FROM segment WHERE camera_id = ?1",
                params![c],
                |r| r.get(0),
            )?,
            None => {
                self.conn
                    .query_row("SELECT coalesce(sum(bytes), 0) FROM segment", [], |r| {
                        r.get(0)
                    })?
            }
        })
    }

    /// Stores a telemetry or event row; false when the camera already has
    /// this document at this capture time (a row forwarded again).
    pub fn insert_aux(&self, camera_id: i64, row: &NewAux<'_>) -> Result<bool, DbError> {
        let sql = format!(
            "INSERT INTO {} (camera_id, time_us, capture_us, json) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            row.kind.table()
        );
        let n = self.conn.prepare_cached(&sql)?.execute(params![
            camera_id,
            row.time_us,
            row.capture_us,
            row.json
        ])?;
        Ok(n == 1)
    }

    /// Stores a batch of telemetry and event rows in one transaction that is
    /// synced to disk before this returns (`synchronous=FULL` for it): the
    /// batch is acknowledged to the relay that sent it, which may then
    /// forget it. Rows the camera already has are skipped; returns how many
    /// were new.
    pub fn insert_aux_durably(
        &mut self,
        camera_id: i64,
        rows: &[NewAux<'_>],
    ) -> Result<usize, DbError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let result = (|| -> Result<usize, DbError> {
            let tx = self.conn.transaction()?;
            let mut new = 0;
            for row in rows {
                let sql = format!(
                    "INSERT INTO {} (camera_id, time_us, capture_us, json) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    row.kind.table()
                );
                new += tx.prepare_cached(&sql)?.execute(params![
                    camera_id,
                    row.time_us,
                    row.capture_us,
                    row.json
                ])?;
            }
            tx.commit()?;
            Ok(new)
        })();
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }

    /// Up to `limit` rows of `kind` of `camera` (endpoint) with an id above
    /// `after`, in id order: what forwarding sends an upstream next.
    pub fn aux_after(
        &self,
        kind: AuxKind,
        camera: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ForwardAux>, DbError> {
        let sql = format!(
            "SELECT a.id, a.capture_us, a.json FROM {} a JOIN camera c ON c.id = a.camera_id
             WHERE c.endpoint = ?1 AND a.id > ?2 ORDER BY a.id LIMIT ?3",
            kind.table()
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![camera, after, limit], |r| {
            Ok(ForwardAux {
                id: r.get(0)?,
                capture_us: r.get(1)?,
                json: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest row id of `kind` of `camera` (endpoint).
    pub fn newest_aux(&self, kind: AuxKind, camera: &str) -> Result<Option<i64>, DbError> {
        let sql = format!(
            "SELECT max(a.id) FROM {} a JOIN camera c ON c.id = a.camera_id WHERE c.endpoint = ?1",
            kind.table()
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![camera], |r| r.get(0))?)
    }

    /// Where forwarding `kind` rows of `camera` to `upstream` stands: the
    /// row id up to which the upstream confirmed it has every row.
    pub fn upstream_aux_watermark(
        &self,
        upstream: &str,
        camera: &str,
        kind: AuxKind,
    ) -> Result<Option<i64>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT row_id FROM upstream_aux_watermark
                 WHERE upstream = ?1 AND camera = ?2 AND kind = ?3",
            )?
            .query_row(params![upstream, camera, kind.code()], |r| r.get(0))
            .optional()?)
    }

    /// Moves an aux watermark forward (never back).
    pub fn set_upstream_aux_watermark(
        &self,
        upstream: &str,
        camera: &str,
        kind: AuxKind,
        row_id: i64,
        now_us: i64,
    ) -> Result<(), DbError> {
        self.conn
            .prepare_cached(
                "INSERT INTO upstream_aux_watermark (upstream, camera, kind, row_id, updated_us)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (upstream, camera, kind) DO UPDATE SET
                   row_id = excluded.row_id, updated_us = excluded.updated_us
                 WHERE excluded.row_id > row_id",
            )?
            .execute(params![upstream, camera, kind.code(), row_id, now_us])?;
        Ok(())
    }

    /// Telemetry or event rows of a camera in `[start, end)`, oldest first,
    /// at most `limit`.
    pub fn aux_between(
        &self,
        kind: AuxKind,
        camera_id: i64,
        start_us: i64,
        end_us: i64,
        limit: i64,
    ) -> Result<Vec<AuxRow>, DbError> {
        let sql = format!(
            "SELECT time_us, capture_us, json FROM {} WHERE camera_id = ?1 AND time_us >= ?2 AND time_us < ?3
             ORDER BY time_us, id LIMIT ?4",
            kind.table()
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![camera_id, start_us, end_us, limit], |r| {
            Ok(AuxRow {
                time_us: r.get(0)?,
                capture_us: r.get(1)?,
                json: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest telemetry or event row of a camera.
    pub fn latest_aux(&self, kind: AuxKind, camera_id: i64) -> Result<Option<AuxRow>, DbError> {
        let sql = format!(
            "SELECT time_us, capture_us, json FROM {} WHERE camera_id = ?1 ORDER BY time_us DESC, id DESC LIMIT 1",
            kind.table()
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![camera_id], |r| {
                Ok(AuxRow {
                    time_us: r.get(0)?,
                    capture_us: r.get(1)?,
                    json: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Deletes telemetry and event rows older than `before_us` (retention).
    pub fn delete_aux_before(&self, before_us: i64) -> Result<usize, DbError> {
        let a = self.conn.execute(
            "DELETE FROM telemetry WHERE time_us < ?1",
            params![before_us],
        )?;
        let b = self
            .conn
            .execute("DELETE FROM event WHERE time_us < ?1", params![before_us])?;
        Ok(a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as data: every table's columns, indexes and foreign keys.
    fn describe(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        let mut st = conn
            .prepare("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
            .expect("prepare");
        let objects: Vec<(String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for (kind, name, table) in objects {
            out.push(format!("{kind} {name} on {table}"));
            if kind == "table" {
                for pragma in ["table_xinfo", "foreign_key_list", "index_list"] {
                    let mut st = conn
                        .prepare(&format!("PRAGMA {pragma}('{name}')"))
                        .expect("pragma");
                    let n = st.column_count();
                    let rows: Vec<String> = st
                        .query_map([], |r| {
                            let cols: Vec<String> = (0..n)
                                .map(|i| format!("{:?}", r.get_ref(i).map(|v| v.data_type())))
                                .zip((0..n).map(|i| {
                                    r.get::<_, rusqlite::types::Value>(i)
                                        .map(|v| format!("{v:?}"))
                                        .unwrap_or_default()
                                }))
                                .map(|(t, v)| format!("{t}={v}"))
                                .collect();
                            Ok(cols.join(","))
                        })
                        .expect("query")
                        .collect::<Result<_, _>>()
                        .expect("rows");
                    // Column order of the table itself matters; the order of
                    // index lists does not.
                    let mut rows = rows;
                    if pragma != "table_xinfo" {
                        rows.sort();
                    }
                    out.push(format!("  {pragma}: {rows:?}"));
                }
            } else if kind == "index" {
                let mut st = conn
                    .prepare(&format!("PRAGMA index_xinfo('{name}')"))
                    .expect("pragma");
                let rows: Vec<String> = st
                    .query_map([], |r| Ok(format!("{:?}", r.get::<_, Option<String>>(2)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows");
                out.push(format!("  columns: {rows:?}"));
            }
        }
        out
    }

    #[test]
    fn migrated_database_equals_fresh_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = Db::open(&dir.path().join("fresh.db")).expect("fresh");

        // Build a version-1 database by hand, with data, then open it.
        let old_path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&old_path).expect("open");
            Db::migrate(&mut conn, 0, 1).expect("to v1");
            conn.execute_batch(
                "INSERT INTO camera (endpoint, name, last_seen_us) VALUES ('abc', 'door', 5);
                 INSERT INTO segment (camera_id, path, start_us, end_us, bytes, init_bytes, frames, codec, width, height)
                 VALUES (1, 'abc/x.mp4', 1, 2, 3, 1, 4, 'avc1.42c01e', 640, 480);",
            )
            .expect("data");
        }
        let migrated = Db::open(&old_path).expect("migrates");
        let version: i64 = migrated
            .connection()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            describe(fresh.connection()),
            describe(migrated.connection())
        );
        assert_eq!(migrated.all_segments().expect("rows")[0].fragments, 0);
    }

    fn new_segment(camera_id: i64, path: &str) -> NewSegment<'_> {
        NewSegment {
            camera_id,
            path,
            start_us: 1_000,
            init_bytes: 700,
            codec: "avc1.42c01e",
            width: 640,
            height: 480,
            open: true,
            backfill: false,
        }
    }

    #[test]
    fn check_constraints_reject_nonsense_rows_in_fresh_and_migrated_databases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old_path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&old_path).expect("open");
            Db::migrate(&mut conn, 0, 3).expect("to v3");
        }
        for db in [
            Db::open_in_memory().expect("fresh"),
            Db::open(&old_path).expect("migrated"),
        ] {
            let cam = db.upsert_camera("ep", "door", 1).expect("camera");
            let bad = [
                // Ends before it starts.
                "INSERT INTO segment (camera_id, path, start_us, end_us, bytes, init_bytes, frames, codec, width, height)
                 VALUES (?1, 'a', 10, 5, 700, 700, 0, 'avc1', 640, 480)",
                // Fewer bytes than its init segment.
                "INSERT INTO segment (camera_id, path, start_us, end_us, bytes, init_bytes, frames, codec, width, height)
                 VALUES (?1, 'b', 1, 5, 10, 700, 0, 'avc1', 640, 480)",
                // No size.
                "INSERT INTO segment (camera_id, path, start_us, end_us, bytes, init_bytes, frames, codec, width, height)
                 VALUES (?1, 'c', 1, 5, 700, 700, 0, 'avc1', 0, 480)",
                // A flag that is neither 0 nor 1.
                "INSERT INTO segment (camera_id, path, start_us, end_us, bytes, init_bytes, frames, codec, width, height, open)
                 VALUES (?1, 'd', 1, 5, 700, 700, 0, 'avc1', 640, 480, 2)",
            ];
            for sql in bad {
                let e = db.connection().execute(sql, params![cam]).expect_err(sql);
                assert!(e.to_string().contains("CHECK"), "{e}");
            }
            let seg = db
                .insert_segment(&new_segment(cam, "ok.mp4"))
                .expect("valid");
            let e = db
                .connection()
                .execute(
                    "INSERT INTO fragment (segment_id, seq, start_us, duration_us, offset, len, frames)
                     VALUES (?1, 1, 1, 10, 700, 0, 1)",
                    params![seg],
                )
                .expect_err("empty fragment");
            assert!(e.to_string().contains("CHECK"), "{e}");
        }
    }

    #[test]
    fn retiring_segments_leaves_garbage_until_forgotten() {
        let mut db = Db::open_in_memory().expect("db");
        let cam = db.upsert_camera("ep", "door", 1).expect("camera");
        let a = db.insert_segment(&new_segment(cam, "ep/a.mp4")).expect("a");
        let b = db.insert_segment(&new_segment(cam, "ep/b.mp4")).expect("b");
        db.add_fragments(
            a,
            &[FragmentRow {
                seq: 1,
                start_us: 1_000,
                duration_us: 10,
                offset: 700,
                len: 100,
                frames: 3,
            }],
        )
        .expect("fragment");
        assert_eq!(db.bytes_per_camera().expect("usage"), vec![(cam, 1_500)]);
        db.retire_segments(&[(a, "ep/a.mp4")]).expect("retire");
        assert_eq!(db.segment(a).expect("q"), None);
        assert!(db.fragments(a).expect("frags").is_empty());
        assert_eq!(db.garbage().expect("garbage"), vec!["ep/a.mp4".to_owned()]);
        assert_eq!(db.bytes_per_camera().expect("usage"), vec![(cam, 700)]);
        assert_eq!(
            db.oldest_segments(None, 10).expect("page")[0].id,
            b,
            "the retired segment is no longer listed"
        );
        db.forget_garbage(&["ep/a.mp4".to_owned()]).expect("forget");
        assert!(db.garbage().expect("garbage").is_empty());
    }

    #[test]
    fn oldest_segments_pages_by_start_then_id() {
        let db = Db::open_in_memory().expect("db");
        let cam = db.upsert_camera("ep", "door", 1).expect("camera");
        let mut ids = Vec::new();
        for (i, start) in [30, 10, 10, 20].into_iter().enumerate() {
            let path = format!("ep/{i}.mp4");
            let mut s = new_segment(cam, &path);
            s.start_us = start;
            ids.push((start, db.insert_segment(&s).expect("insert")));
        }
        ids.sort();
        let first = db.oldest_segments(None, 3).expect("page");
        let rest = db
            .oldest_segments(first.last().map(|s| (s.start_us, s.id)), 3)
            .expect("page");
        let got: Vec<(i64, i64)> = first
            .iter()
            .chain(&rest)
            .map(|s| (s.start_us, s.id))
            .collect();
        assert_eq!(got, ids);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("set");
        }
        assert!(matches!(Db::open(&path), Err(DbError::TooNew { .. })));
    }

    #[test]
    fn segments_fragments_and_aux_round_trip() {
        let mut db = Db::open_in_memory().expect("db");
        let cam = db.upsert_camera("ep1", "door", 10).expect("camera");
        assert_eq!(
            db.upsert_camera("ep1", "front door", 5).expect("again"),
            cam
        );
        let id = db
            .insert_segment(&NewSegment {
                camera_id: cam,
                path: "ep1/2024-01-01/00-00-00.mp4",
                start_us: 1_000,
                init_bytes: 700,
                codec: "avc1.42c01e",
                width: 640,
                height: 480,
                open: true,
                backfill: false,
            })
            .expect("segment");
        let frag = FragmentRow {
            seq: 1,
            start_us: 1_000,
            duration_us: 2_000_000,
            offset: 700,
            len: 5_000,
            frames: 60,
        };
        db.add_fragments(id, &[frag]).expect("fragment");
        let seg = db.segment(id).expect("query").expect("present");
        assert_eq!(
            (seg.bytes, seg.end_us, seg.frames, seg.fragments),
            (5_700, 2_001_000, 60, 1)
        );
        assert_eq!(db.fragments(id).expect("frags"), vec![frag]);
        assert_eq!(db.segments_between(cam, 0, 1_001).expect("q").len(), 1);
        assert!(db
            .segments_between(cam, 3_000_000, 4_000_000)
            .expect("q")
            .is_empty());
        assert_eq!(db.cameras().expect("cams")[0].name, "front door");
        assert_eq!(db.total_bytes(Some(cam)).expect("bytes"), 5_700);

        let motion = NewAux {
            kind: AuxKind::Event,
            time_us: 50,
            capture_us: 49,
            json: r#"{"motion":true}"#,
        };
        assert!(db.insert_aux(cam, &motion).expect("event"));
        assert!(
            !db.insert_aux(
                cam,
                &NewAux {
                    time_us: 51,
                    ..motion
                }
            )
            .expect("again"),
            "the same document at the same capture time is one event"
        );
        assert!(db
            .insert_aux(
                cam,
                &NewAux {
                    capture_us: 48,
                    ..motion
                }
            )
            .expect("earlier"));
        assert_eq!(
            db.aux_between(AuxKind::Event, cam, 0, 100, 10)
                .expect("q")
                .len(),
            2
        );
        assert!(db
            .aux_between(AuxKind::Telemetry, cam, 0, 100, 10)
            .expect("q")
            .is_empty());
        db.delete_segment(id).expect("delete");
        assert!(db.fragments(id).expect("frags").is_empty());
        assert_eq!(db.total_bytes(None).expect("bytes"), 0);
    }

    #[test]
    fn aux_rows_past_a_watermark_keep_their_identity_and_ids_never_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).expect("open");
            Db::migrate(&mut conn, 0, 5).expect("to v5");
            conn.execute_batch(
                "INSERT INTO camera (endpoint, name, last_seen_us) VALUES ('ep', 'door', 5);
                 INSERT INTO event (camera_id, time_us, json) VALUES (1, 7, '{\"old\":1}');",
            )
            .expect("data");
        }
        let mut db = Db::open(&path).expect("migrates through v6");
        let old = db.aux_after(AuxKind::Event, "ep", 0, 10).expect("rows");
        assert_eq!(old.len(), 1);
        assert_eq!(
            old[0].capture_us, None,
            "rows from before v6 have no origin"
        );
        let row = |capture_us, json| NewAux {
            kind: AuxKind::Event,
            time_us: capture_us + 1,
            capture_us,
            json,
        };
        assert_eq!(
            db.insert_aux_durably(1, &[row(10, "{}"), row(11, "{}"), row(10, "{}")])
                .expect("batch"),
            2,
            "a row sent twice is stored once"
        );
        let rows = db
            .aux_after(AuxKind::Event, "ep", old[0].id, 10)
            .expect("rows");
        assert_eq!(
            rows.iter().map(|r| r.capture_us).collect::<Vec<_>>(),
            vec![Some(10), Some(11)]
        );
        assert!(db
            .aux_after(AuxKind::Telemetry, "ep", 0, 10)
            .expect("rows")
            .is_empty());
        let newest = db.newest_aux(AuxKind::Event, "ep").expect("newest");
        assert_eq!(newest, Some(rows[1].id));
        assert_eq!(db.newest_aux(AuxKind::Telemetry, "ep").expect("none"), None);

        // Watermarks move forward only.
        assert_eq!(
            db.upstream_aux_watermark("up", "ep", AuxKind::Event)
                .expect("q"),
            None
        );
        db.set_upstream_aux_watermark("up", "ep", AuxKind::Event, rows[1].id, 1)
            .expect("set");
        db.set_upstream_aux_watermark("up", "ep", AuxKind::Event, rows[0].id, 2)
            .expect("stale");
        assert_eq!(
            db.upstream_aux_watermark("up", "ep", AuxKind::Event)
                .expect("q"),
            Some(rows[1].id)
        );

        // Retention empties the table: new rows still get ids above the
        // watermark, or forwarding would pass over them.
        db.delete_aux_before(i64::MAX).expect("retention");
        assert!(db.insert_aux(1, &row(20, "{}")).expect("new"));
        let after = db
            .aux_after(AuxKind::Event, "ep", rows[1].id, 10)
            .expect("rows");
        assert_eq!(after.len(), 1, "the new row lies past the watermark");
    }
}
