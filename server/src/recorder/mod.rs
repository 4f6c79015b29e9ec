//! The recorder: one more consumer of the hub's feed, writing each camera's
//! GOPs as fragmented MP4 segments and indexing them, telemetry and events in
//! SQLite. Design, invariants and fsync order: docs/design/recording.md.
//!
//! Channels: [`Recorder::run`] reads the bounded feed the hub fills with
//! `try_send` (see [`crate::feed`]); the hub drops whole GOPs when this queue
//! is full, so a slow disk never blocks live routing. A dedicated writer
//! thread owns the recorder (its files and index connection) and handles one
//! event at a time, so events of a camera stay in order.
//!
//! Batching: fragments are written to their files as they arrive; every
//! `flush_seconds` (or 64 fragments) the writer syncs the files written to
//! and commits all their index rows in one transaction, then acknowledges
//! them to the cameras. A `kill -9` still loses at most the fragment being
//! written (the files are the source of truth; reconciliation re-indexes
//! them); a power cut loses at most the unacknowledged flush interval.
//!
//! # Layout
//! * [`clock`]: injected wall-clock and monotonic time (real, simulated).
//! * [`timing`]: camera capture clock → wall clock, drift followed at ≤500 ppm.
//! * [`segment`]: building fragments (sans-IO) and the segment file adapter.
//! * [`reconcile`]: start-up recovery of index and files.
//! * [`retention`]: deleting oldest segments by age and size.
//! * [`storage`]: the file-system operations of the writer, behind a trait.

pub mod clock;
pub mod reconcile;
pub mod retention;
pub mod segment;
pub mod storage;
pub mod timing;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kodama_media::fmp4::{AudioTrack, VideoTrack};
use kodama_media::h264;
use kodama_net::EndpointId;
use kodama_proto::{CameraInfo, Channel, Frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{
    AuxKind, Db, DbError, FragmentOrigin, FragmentRow, IndexBatch, NewAux, NewSegment,
};
use crate::feed::{FeedEvent, Group, StoredAcks};
use kodama_proto::Stored;

pub use clock::{Clock, SimulatedClock, SystemClock};
pub use reconcile::{reconcile, ReconcileReport};
use retention::Usage;
use segment::{attach_audio, build_fragment, ticks_to_us, SegmentFile};
pub use storage::{is_disk_full, LocalStorage, Storage, StorageFile};
use timing::{Observation, WallMapper};

/// Largest telemetry or event document stored (bytes of JSON).
pub const MAX_AUX_BYTES: usize = 64 * 1024;

/// Audio packets held for the GOP whose time span they fall in (10 s of
/// 20 ms packets); beyond it the oldest are dropped.
const MAX_PENDING_AUDIO: usize = 500;

/// Length of the cameras' Opus packets (20 ms).
const AUDIO_PACKET_US: u64 = 20_000;

/// How often retention runs besides after each new segment.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Extra space a full disk makes retention free beyond the failed write.
const FULL_DISK_MARGIN: u64 = 1 << 20;

/// Fragments written but not yet committed beyond which the writer commits
/// regardless of `flush_seconds` (bounds memory and the batch).
const MAX_PENDING_FRAGMENTS: usize = 64;

/// A capture-clock jump forward within a connection beyond which a new
/// segment starts, so the gap shows in the index.
const GAP_US: u64 = 1_000_000;

/// A backfill segment that received nothing for this long is closed (the
/// camera's backlog is empty or it went away).
const BACKFILL_IDLE: Duration = Duration::from_secs(10);

/// Where a fragment's audio comes from.
#[derive(Debug, Clone, Copy)]
enum FragmentAudio<'a> {
    /// The camera's live audio waiting for the GOP whose span it falls in.
    Live,
    /// The packets a backfilled GOP carried (captured during its span,
    /// kept by the camera with it), in time order.
    Carried(&'a [&'a Frame]),
}

/// Which of a camera's two open segments: live video, or GOPs uploaded
/// after an outage (which arrive concurrently and lie in the past).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Live,
    Backfill,
}

/// `[recording]` in the server configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderConfig {
    /// Data directory (index, recordings, API token). Not read from the
    /// `[recording]` table: the server sets it from `[server] data_dir`.
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// Roll segments after this many minutes (at the next keyframe).
    pub segment_minutes: u32,
    /// Delete recordings older than this many days.
    pub max_age_days: u32,
    /// Keep all recordings together under this many GB (10^9 bytes).
    pub max_total_gb: f64,
    /// Keep each camera's recordings under this many GB, if set.
    pub max_camera_gb: Option<f64>,
    /// Sync written video and commit its index at least this often
    /// (seconds; 0 = after every GOP). A power cut loses at most this much
    /// (cameras keep it until acknowledged); `kill -9` loses at most the
    /// GOP being written, whatever the value.
    pub flush_seconds: u32,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            data_dir: PathBuf::from("kodama-data"),
            segment_minutes: 1,
            max_age_days: 7,
            max_total_gb: 10.0,
            max_camera_gb: None,
            flush_seconds: 5,
        }
    }
}

impl RecorderConfig {
    /// The recordings directory.
    pub fn recordings_dir(&self) -> PathBuf {
        recordings_dir(&self.data_dir)
    }

    /// The index database.
    pub fn db_path(&self) -> PathBuf {
        db_path(&self.data_dir)
    }
}

/// `<data>/recordings`.
pub fn recordings_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recordings")
}

/// `<data>/kodama.db`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kodama.db")
}

fn gb_to_bytes(gb: f64) -> u64 {
    if gb.is_finite() && gb > 0.0 {
        (gb * 1e9) as u64
    } else {
        0
    }
}

/// Why the recorder could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// The data directory could not be created.
    #[error("creating {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The index could not be opened or migrated.
    #[error("recording index: {0}")]
    Db(#[from] DbError),
    /// Start-up reconciliation failed.
    #[error("reconciling recordings: {0}")]
    Reconcile(#[from] reconcile::ReconcileError),
    /// A configuration value is unusable.
    #[error("recording.{field}: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// Counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Fragments (GOPs) written and indexed.
    pub fragments_written: AtomicU64,
    /// Fragments dropped by the recorder (disk errors, bad input).
    pub fragments_dropped: AtomicU64,
    /// Video payload bytes received in written fragments.
    pub payload_bytes: AtomicU64,
    /// Bytes written to segment files.
    pub file_bytes: AtomicU64,
    /// Segments opened.
    pub segments_opened: AtomicU64,
    /// Segments deleted by retention.
    pub segments_deleted: AtomicU64,
    /// Full-disk conditions met.
    pub disk_full: AtomicU64,
    /// Index updates that failed (the file still has the data; the next
    /// start re-indexes it).
    pub index_errors: AtomicU64,
    /// Telemetry and event rows stored.
    pub aux_stored: AtomicU64,
    /// Telemetry and event frames rejected (not JSON, too large) or lost.
    pub aux_dropped: AtomicU64,
    /// Backfilled GOPs written.
    pub backfill_written: AtomicU64,
    /// Backfilled GOPs the index already had (uploaded twice), acknowledged
    /// without writing.
    pub backfill_duplicates: AtomicU64,
    /// Index transactions committed by the writer.
    pub index_commits: AtomicU64,
    /// `fdatasync` calls on segment files (creation included).
    pub file_syncs: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// What the API shows about one camera's recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CameraRecording {
    /// A segment is open and receiving fragments.
    pub recording: bool,
    /// The open segment.
    pub segment_id: Option<i64>,
    /// Wall time of the last fragment written.
    pub last_fragment_us: Option<i64>,
    /// Fragments of this camera dropped by the recorder.
    pub fragments_dropped: u64,
    /// Backfilled GOPs written since the server started.
    pub backfill_fragments: u64,
    /// Capture-derived wall time of the newest backfilled GOP written.
    pub last_backfill_us: Option<i64>,
}

/// Live recording state per camera endpoint, shared with the API.
#[derive(Debug, Clone, Default)]
pub struct RecordingStatus(Arc<Mutex<HashMap<String, CameraRecording>>>);

impl RecordingStatus {
    /// The state of a camera, if the recorder has seen it since start.
    pub fn get(&self, endpoint: &str) -> Option<CameraRecording> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .cloned()
    }

    fn update(&self, endpoint: &str, f: impl FnOnce(&mut CameraRecording)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(endpoint.to_owned()).or_default());
    }
}

/// The segment a camera is writing.
#[derive(Debug)]
struct OpenSegment {
    id: i64,
    file: SegmentFile,
    track: VideoTrack,
    /// Capture time of the segment's first frame (media time zero).
    start_capture_us: u64,
    /// Decode time where the next fragment may start, ticks.
    end_ticks: u64,
    /// Capture time the next GOP is expected at.
    next_capture_us: u64,
    next_sequence: u32,
    /// The audio track in the file's init segment, if any.
    audio: Option<AudioTrack>,
    /// Audio decode time (48 kHz) where the next fragment's audio may start.
    audio_end_ticks: u64,
}

/// Per-camera state.
#[derive(Debug)]
struct CameraState {
    endpoint: String,
    db_id: i64,
    info: Option<CameraInfo>,
    mapper: WallMapper,
    segment: Option<OpenSegment>,
    last_group: Option<u64>,
    /// The segment backfilled GOPs go to, and when it last got one.
    backfill: Option<OpenSegment>,
    backfill_at: Duration,
    /// Live audio packets not yet written, oldest first (a backfilled GOP
    /// brings its own).
    audio: std::collections::VecDeque<Arc<Frame>>,
}

impl CameraState {
    /// The audio track the camera's hello announced.
    fn audio_track(&self) -> Option<AudioTrack> {
        let a = self.info.as_ref()?.audio?;
        Some(AudioTrack {
            channels: a.channels,
            pre_skip: a.pre_skip,
            input_sample_rate: a.sample_rate,
        })
    }
}

impl CameraState {
    fn lane(&mut self, lane: Lane) -> &mut Option<OpenSegment> {
        match lane {
            Lane::Live => &mut self.segment,
            Lane::Backfill => &mut self.backfill,
        }
    }
}

/// What the writer wrote but has not yet made durable and committed.
#[derive(Debug, Default)]
struct Pending {
    batch: IndexBatch,
    /// The open segments written to, to sync before the commit.
    lanes: Vec<(EndpointId, Lane)>,
    /// Acknowledgements owed once the batch is durable, by segment id.
    acks: Vec<(i64, EndpointId, Stored)>,
    /// When the oldest uncommitted fragment was written (monotonic).
    since: Option<Duration>,
}

/// The recorder. Create with [`Recorder::open`], then drive with
/// [`Recorder::run`].
#[derive(Debug)]
pub struct Recorder {
    cfg: RecorderConfig,
    root: PathBuf,
    clock: Arc<dyn Clock>,
    storage: Arc<dyn Storage>,
    db: Db,
    usage: Usage,
    pending: Pending,
    cameras: HashMap<EndpointId, CameraState>,
    stats: Arc<RecorderStats>,
    status: RecordingStatus,
    reconciled: ReconcileReport,
    last_retention: Duration,
    acks: Option<StoredAcks>,
}

/// One unit of work for the blocking pool.
#[derive(Debug)]
enum Work {
    Event(FeedEvent),
    Retention,
    Shutdown,
}

impl Recorder {
    /// Opens the data directory and index, reconciles index and files, and
    /// applies retention.
    pub fn open(cfg: RecorderConfig, clock: Arc<dyn Clock>) -> Result<Recorder, RecorderError> {
        Self::open_with_storage(cfg, clock, Arc::new(LocalStorage))
    }

    /// [`Recorder::open`] writing through `storage` (tests inject a full
    /// or failing disk).
    pub fn open_with_storage(
        cfg: RecorderConfig,
        clock: Arc<dyn Clock>,
        storage: Arc<dyn Storage>,
    ) -> Result<Recorder, RecorderError> {
        if cfg.segment_minutes == 0 || cfg.segment_minutes > 24 * 60 {
            return Err(RecorderError::Config {
                field: "segment_minutes",
                message: format!("must be 1..=1440, got {}", cfg.segment_minutes),
            });
        }
        if !(cfg.max_total_gb.is_finite() && cfg.max_total_gb > 0.0) {
            return Err(RecorderError::Config {
                field: "max_total_gb",
                message: format!("must be positive, got {}", cfg.max_total_gb),
            });
        }
        if cfg.flush_seconds > 300 {
            return Err(RecorderError::Config {
                field: "flush_seconds",
                message: format!("must be 0..=300, got {}", cfg.flush_seconds),
            });
        }
        let root = cfg.recordings_dir();
        std::fs::create_dir_all(&root).map_err(|source| RecorderError::Io {
            path: root.clone(),
            source,
        })?;
        let mut db = Db::open(&cfg.db_path())?;
        let reconciled = reconcile(&mut db, &root)?;
        tracing::info!(?reconciled, root = %root.display(), "recordings reconciled");
        let usage = Usage::load(&db)?;
        let mut rec = Recorder {
            cfg,
            root,
            last_retention: clock.monotonic(),
            clock,
            storage,
            db,
            usage,
            pending: Pending::default(),
            cameras: HashMap::new(),
            stats: Arc::default(),
            status: RecordingStatus::default(),
            reconciled,
            acks: None,
        };
        rec.retention(0);
        Ok(rec)
    }

    /// What start-up reconciliation did.
    pub fn reconcile_report(&self) -> &ReconcileReport {
        &self.reconciled
    }

    /// The counters.
    pub fn stats(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    /// Sends `Message::Stored` acknowledgements to camera sessions through
    /// `acks` (the hub's routes): live video recorded, backfill recorded.
    pub fn set_acks(&mut self, acks: StoredAcks) {
        self.acks = Some(acks);
    }

    fn ack(&self, camera: EndpointId, stored: Stored) {
        if let Some(a) = &self.acks {
            a.send(camera, stored);
        }
    }

    /// Acknowledges what was just appended to `lane` once it is durable and
    /// indexed (after the next flush).
    fn ack_when_durable(&mut self, camera: EndpointId, lane: Lane, stored: Stored) {
        let Some(id) = self
            .cameras
            .get_mut(&camera)
            .and_then(|c| c.lane(lane).as_ref().map(|s| s.id))
        else {
            return;
        };
        self.pending.acks.push((id, camera, stored));
    }

    /// Every camera in the index (endpoint id, name, last seen), so the
    /// server knows its cameras after a restart before they reconnect.
    pub fn known_cameras(&self) -> Vec<crate::db::CameraRow> {
        self.db.cameras().unwrap_or_else(|e| {
            tracing::warn!("cannot list indexed cameras: {e}");
            Vec::new()
        })
    }

    /// The live per-camera recording state (for the API).
    pub fn status(&self) -> RecordingStatus {
        self.status.clone()
    }

    /// Consumes the feed until `cancel` fires or the feed closes; then
    /// writes what is already queued, commits, and closes all segments.
    ///
    /// The work runs on a dedicated writer thread that owns the recorder;
    /// this future completes when that thread is done.
    pub async fn run(self, rx: mpsc::Receiver<FeedEvent>, cancel: CancellationToken) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("recorder-writer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(self.write_loop(rx, cancel)),
                    Err(e) => {
                        tracing::error!("recorder writer cannot start: {e}; recording stopped")
                    }
                }
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the recorder writer thread: {e}; recording stopped");
            return;
        }
        if done_rx.await.is_err() {
            tracing::error!("recorder writer thread failed; recording stopped");
        }
    }

    /// The writer thread's loop. Disk work runs inline: this runtime serves
    /// only this thread, so blocking it delays nothing else.
    async fn write_loop(mut self, mut rx: mpsc::Receiver<FeedEvent>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(RETENTION_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let flush_in = self.flush_due_in().unwrap_or(RETENTION_INTERVAL);
            let work = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => Some(Work::Event(ev)),
                    None => break,
                },
                _ = tokio::time::sleep(flush_in) => None,
                _ = tick.tick() => Some(Work::Retention),
            };
            match work {
                Some(work) => self.handle(work),
                None => self.flush_if_due(),
            }
        }
        // Write what the hub already handed over (bounded by the queue size).
        let queued = rx.len();
        for _ in 0..queued {
            match rx.try_recv() {
                Ok(ev) => self.handle(Work::Event(ev)),
                Err(_) => break,
            }
        }
        self.handle(Work::Shutdown);
    }

    /// How long until the pending batch must be committed, if any is.
    fn flush_due_in(&self) -> Option<Duration> {
        let since = self.pending.since?;
        let age = self.clock.monotonic().saturating_sub(since);
        Some(self.flush_interval().saturating_sub(age))
    }

    fn flush_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.cfg.flush_seconds))
    }

    fn flush_if_due(&mut self) {
        let full = self.pending.batch.fragments.len() >= MAX_PENDING_FRAGMENTS;
        if full || self.flush_due_in().is_some_and(|d| d.is_zero()) {
            self.flush();
        }
    }

    /// Makes everything written durable and indexed: syncs each file
    /// written to, then commits all their rows in one transaction, then
    /// sends the acknowledgements (invariant 1: rows only for synced bytes).
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.batch.is_empty() && pending.acks.is_empty() {
            return;
        }
        let mut failed: Vec<(EndpointId, Lane, i64)> = Vec::new();
        for &(camera, lane) in &pending.lanes {
            let Some(cam) = self.cameras.get_mut(&camera) else {
                continue;
            };
            let endpoint = cam.endpoint.clone();
            let Some(seg) = cam.lane(lane).as_mut() else {
                continue;
            };
            if !seg.file.needs_sync() {
                continue;
            }
            bump(&self.stats.file_syncs, 1);
            if let Err(e) = seg.file.sync() {
                if is_disk_full(&e) {
                    bump(&self.stats.disk_full, 1);
                }
                tracing::warn!(camera = %endpoint, path = %seg.file.path().display(), "cannot sync segment; its unsynced GOPs are dropped: {e}");
                failed.push((camera, lane, seg.id));
            }
        }
        let mut batch = pending.batch;
        let before = batch.fragments.len();
        batch
            .fragments
            .retain(|(id, _, _)| !failed.iter().any(|f| f.2 == *id));
        let lost = (before - batch.fragments.len()) as u64;
        if lost > 0 {
            bump(&self.stats.fragments_dropped, lost);
        }
        let mut committed = self.db.commit_batch(&batch);
        if let Err(e) = &committed {
            if e.is_disk_full() {
                bump(&self.stats.disk_full, 1);
                self.retention(FULL_DISK_MARGIN);
                committed = self.db.commit_batch(&batch);
            }
        }
        bump(&self.stats.index_commits, 1);
        match committed {
            Ok(()) => {
                for (id, camera, stored) in pending.acks {
                    if !failed.iter().any(|f| f.2 == id) {
                        self.ack(camera, stored);
                    }
                }
            }
            Err(e) => {
                // The files hold the GOPs (synced); the next start indexes
                // them. Unacknowledged, the cameras keep them meanwhile.
                bump(&self.stats.index_errors, batch.fragments.len() as u64);
                tracing::warn!(
                    fragments = batch.fragments.len(),
                    "fragments written but not indexed (re-indexed at next start): {e}"
                );
            }
        }
        for (camera, lane, _) in failed {
            self.close_lane(camera, lane);
        }
    }

    fn handle(&mut self, work: Work) {
        match work {
            Work::Event(FeedEvent::CameraOnline { camera, info }) => self.on_online(camera, info),
            Work::Event(FeedEvent::Group { camera, group }) => self.on_group(camera, &group),
            Work::Event(FeedEvent::Aux { camera, frame }) => self.on_aux(camera, &frame),
            Work::Event(FeedEvent::CameraOffline { camera }) => self.on_offline(camera),
            Work::Event(FeedEvent::Backfill { camera, group }) => self.on_backfill(camera, &group),
            Work::Event(FeedEvent::AuxBatch { camera, id, frames }) => {
                self.on_aux_batch(camera, id, &frames)
            }
            Work::Retention => self.retention(0),
            Work::Shutdown => {
                self.flush();
                let cams: Vec<EndpointId> = self.cameras.keys().copied().collect();
                for c in cams {
                    self.close_segment(c);
                    self.close_lane(c, Lane::Backfill);
                }
            }
        }
        self.flush_if_due();
        if self.clock.monotonic().saturating_sub(self.last_retention) >= RETENTION_INTERVAL {
            self.retention(0);
        }
    }

    /// Handles one feed event synchronously (tests and benchmarks drive the
    /// recorder directly with this); commits when a flush is due, like the
    /// writer thread.
    pub fn handle_event(&mut self, event: FeedEvent) {
        self.handle(Work::Event(event));
    }

    /// Syncs and commits everything written so far.
    pub fn flush_now(&mut self) {
        self.flush();
    }

    /// Closes all open segments (what `run` does when it ends).
    pub fn close_all(&mut self) {
        self.handle(Work::Shutdown);
    }

    fn camera(&mut self, camera: EndpointId, name: Option<&str>) -> Option<&mut CameraState> {
        let now = self.clock.wall_us();
        if !self.cameras.contains_key(&camera) {
            let endpoint = camera.to_string();
            let id = match name {
                Some(n) => self.db.upsert_camera(&endpoint, n, now),
                None => self.db.ensure_camera(&endpoint, now),
            };
            match id {
                Ok(db_id) => {
                    self.cameras.insert(
                        camera,
                        CameraState {
                            endpoint,
                            db_id,
                            info: None,
                            mapper: WallMapper::default(),
                            segment: None,
                            last_group: None,
                            backfill: None,
                            backfill_at: Duration::ZERO,
                            audio: Default::default(),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(%camera, "cannot index camera: {e}");
                    return None;
                }
            }
        } else if let Some(n) = name {
            let endpoint = camera.to_string();
            if let Err(e) = self.db.upsert_camera(&endpoint, n, now) {
                tracing::warn!(%camera, "cannot update camera: {e}");
            }
        }
        self.cameras.get_mut(&camera)
    }

    fn on_online(&mut self, camera: EndpointId, info: CameraInfo) {
        // A new connection: the capture clock may have restarted, and the
        // gap while offline must show, so the segment ends here.
        self.close_segment(camera);
        self.close_lane(camera, Lane::Backfill);
        let name = info.name.clone();
        if let Some(cam) = self.camera(camera, Some(&name)) {
            cam.info = Some(info);
            cam.mapper = WallMapper::default();
            cam.last_group = None;
            cam.audio.clear();
        }
    }

    fn on_offline(&mut self, camera: EndpointId) {
        self.close_segment(camera);
        self.close_lane(camera, Lane::Backfill);
        if let Some(cam) = self.cameras.get_mut(&camera) {
            cam.last_group = None;
        }
    }

    fn close_segment(&mut self, camera: EndpointId) {
        self.close_lane(camera, Lane::Live);
    }

    fn close_lane(&mut self, camera: EndpointId, lane: Lane) {
        if self
            .cameras
            .get_mut(&camera)
            .is_none_or(|c| c.lane(lane).is_none())
        {
            return;
        }
        // Its fragments are made durable and indexed before it is marked
        // closed (reconciliation re-reads only open or changed segments).
        self.flush();
        let Some(cam) = self.cameras.get_mut(&camera) else {
            return;
        };
        let Some(seg) = cam.lane(lane).take() else {
            return;
        };
        let endpoint = cam.endpoint.clone();
        let camera_db = cam.db_id;
        if seg.file.is_empty() {
            // Nothing playable: forget it. Its row was never visible with
            // content; a crash between unlink and delete leaves a row for a
            // missing file, which reconciliation drops.
            let _ = self.storage.remove_file(seg.file.path());
            self.usage.remove(camera_db, seg.file.len());
            if let Err(e) = self.db.delete_segment(seg.id) {
                tracing::warn!("dropping empty segment row: {e}");
            }
        } else if let Err(e) = self.db.close_segment(seg.id) {
            bump(&self.stats.index_errors, 1);
            tracing::warn!(segment = seg.id, "cannot mark segment closed: {e}");
        }
        if lane == Lane::Backfill {
            return;
        }
        self.status.update(&endpoint, |s| {
            s.recording = false;
            s.segment_id = None;
        });
    }

    fn drop_fragment(&self, endpoint: &str, why: &str) {
        bump(&self.stats.fragments_dropped, 1);
        self.status.update(endpoint, |s| s.fragments_dropped += 1);
        tracing::warn!(camera = endpoint, "recorder dropped a GOP: {why}");
    }

    fn on_group(&mut self, camera: EndpointId, group: &Group) {
        let mono = self.clock.monotonic();
        let backfill_idle = self.cameras.get(&camera).is_some_and(|c| {
            c.backfill.is_some() && mono.saturating_sub(c.backfill_at) >= BACKFILL_IDLE
        });
        if backfill_idle {
            self.close_lane(camera, Lane::Backfill);
        }
        let now = self.clock.wall_us();
        let segment_us = u64::from(self.cfg.segment_minutes) * 60_000_000;
        let frames: Vec<&Frame> = group
            .frames
            .iter()
            .filter(|f| f.channel == Channel::Video)
            .map(|f| f.as_ref())
            .collect();
        let (Some(first), Some(last)) = (frames.first().copied(), frames.last().copied()) else {
            return;
        };
        let Some(cam) = self.camera(camera, None) else {
            bump(&self.stats.fragments_dropped, 1);
            return;
        };
        let endpoint = cam.endpoint.clone();
        if !(first.is_keyframe() || h264::is_idr(&first.payload)) {
            self.drop_fragment(&endpoint, "group does not start with a keyframe");
            return;
        }
        // In-band parameter sets win over the handshake's (H.264 §7.4.1.2.1:
        // the active SPS is the one the IDR refers to).
        let track = match h264::parameter_sets(&first.payload) {
            (Some(sps), Some(pps)) => VideoTrack::new(sps, pps),
            _ => match &cam.info {
                Some(info) => VideoTrack::new(&info.sps, &info.pps),
                None => {
                    self.drop_fragment(&endpoint, "no SPS/PPS known for the camera");
                    return;
                }
            },
        };
        let track = match track {
            Ok(t) => t,
            Err(e) => {
                self.drop_fragment(&endpoint, &format!("unusable parameter sets: {e}"));
                return;
            }
        };
        let observation = cam.mapper.observe(last.capture_us, now);
        let wall_us = cam.mapper.wall_us(first.capture_us).unwrap_or(now);
        let nominal_us = nominal_frame_us(cam.info.as_ref(), &frames);
        let audio_track = cam.audio_track();
        let roll = match &cam.segment {
            None => Some("start"),
            Some(seg) if seg.track != track => Some("codec or resolution change"),
            Some(seg) if seg.audio != audio_track => Some("audio track change"),
            Some(_) if observation == Observation::Reset => Some("capture clock jump"),
            Some(_)
                if cam
                    .last_group
                    .is_some_and(|g| g.wrapping_add(1) != group.id) =>
            {
                Some("missing GOP")
            }
            Some(seg) if first.capture_us < seg.start_capture_us => Some("capture clock went back"),
            Some(seg) if first.capture_us > seg.next_capture_us + GAP_US => Some("capture gap"),
            Some(seg) if first.capture_us - seg.start_capture_us >= segment_us => Some("duration"),
            Some(_) => None,
        };
        cam.last_group = Some(group.id);
        if let Some(reason) = roll {
            if cam.segment.is_some() {
                tracing::debug!(camera = %endpoint, reason, "rolling segment");
            }
            self.close_segment(camera);
            if !self.open_segment(camera, track, first.capture_us, wall_us, Lane::Live) {
                self.drop_fragment(&endpoint, "cannot open a segment");
                return;
            }
        }
        if self.append(
            camera,
            &frames,
            nominal_us,
            wall_us,
            Lane::Live,
            FragmentAudio::Live,
        ) {
            self.ack_when_durable(
                camera,
                Lane::Live,
                Stored::LiveThrough {
                    capture_us: first.capture_us,
                },
            );
        }
    }

    /// A GOP the camera kept while offline: written to the camera's backfill
    /// segment with its original capture times (wall time from the camera's
    /// clock mapping), the audio it carried as the fragment's audio run on
    /// the same origin, then acknowledged so the camera can forget it. A GOP
    /// the index already has in full is acknowledged without writing.
    fn on_backfill(&mut self, camera: EndpointId, group: &Group) {
        let now = self.clock.monotonic();
        let segment_us = u64::from(self.cfg.segment_minutes) * 60_000_000;
        let frames: Vec<&Frame> = group
            .frames
            .iter()
            .filter(|f| f.channel.is_video())
            .map(|f| f.as_ref())
            .collect();
        let (Some(first), Some(last)) = (frames.first().copied(), frames.last().copied()) else {
            return;
        };
        let mut audio: Vec<&Frame> = group
            .frames
            .iter()
            .filter(|f| f.channel == Channel::Audio)
            .map(|f| f.as_ref())
            .collect();
        audio.sort_by_key(|a| a.capture_us);
        let Some(cam) = self.camera(camera, None) else {
            return;
        };
        let endpoint = cam.endpoint.clone();
        let db_id = cam.db_id;
        let open_ids = [&cam.segment, &cam.backfill].map(|s| s.as_ref().map(|s| s.id));
        let frames_pending = self
            .pending
            .batch
            .fragments
            .iter()
            .filter(|(id, _, o)| {
                open_ids.contains(&Some(*id)) && o.capture_us == first.capture_us as i64
            })
            .map(|(_, row, _)| row.frames)
            .max();
        if frames_pending.is_some_and(|n| n >= frames.len() as i64) {
            bump(&self.stats.backfill_duplicates, 1);
            self.pending.acks.push((
                open_ids[1].or(open_ids[0]).unwrap_or(0),
                camera,
                Stored::Backfill { id: group.id },
            ));
            return;
        }
        let unplayable = |why: &str| {
            tracing::warn!(camera = %endpoint, record = group.id, "backfilled GOP cannot be recorded ({why}); acknowledging it so the camera stops sending it");
        };
        match self.db.frames_recorded_at(db_id, first.capture_us as i64) {
            Ok(Some(n)) if n >= frames.len() as i64 => {
                bump(&self.stats.backfill_duplicates, 1);
                self.ack(camera, Stored::Backfill { id: group.id });
                return;
            }
            Ok(_) => {}
            Err(e) => {
                // Unsure whether it is a duplicate: not acknowledged, so the
                // camera sends it again later.
                tracing::warn!(camera = %endpoint, "cannot check the index for a backfilled GOP: {e}");
                return;
            }
        }
        let Some(cam) = self.cameras.get_mut(&camera) else {
            return;
        };
        let track = match h264::parameter_sets(&first.payload) {
            (Some(sps), Some(pps)) => VideoTrack::new(sps, pps),
            _ => match &cam.info {
                Some(info) => VideoTrack::new(&info.sps, &info.pps),
                None => {
                    unplayable("no SPS/PPS known");
                    self.ack(camera, Stored::Backfill { id: group.id });
                    return;
                }
            },
        };
        let track = match track {
            Ok(t) => t,
            Err(e) => {
                unplayable(&format!("unusable parameter sets: {e}"));
                self.ack(camera, Stored::Backfill { id: group.id });
                return;
            }
        };
        // The camera's clock, mapped like live video once live video has
        // been seen on this connection; its own clock otherwise.
        let wall_us = cam
            .mapper
            .wall_us(first.capture_us)
            .unwrap_or(first.capture_us as i64);
        let nominal_us = nominal_frame_us(cam.info.as_ref(), &frames);
        cam.backfill_at = now;
        let audio_track = cam.audio_track();
        let roll = match &cam.backfill {
            None => true,
            Some(seg) => {
                seg.track != track
                    || seg.audio != audio_track
                    || first.capture_us < seg.next_capture_us.saturating_sub(nominal_us / 2)
                    || first.capture_us > seg.next_capture_us + GAP_US
                    || first.capture_us - seg.start_capture_us >= segment_us
            }
        };
        if roll {
            self.close_lane(camera, Lane::Backfill);
            if !self.open_segment(camera, track, first.capture_us, wall_us, Lane::Backfill) {
                tracing::warn!(camera = %endpoint, "cannot open a backfill segment; the camera will retry");
                return;
            }
        }
        if self.append(
            camera,
            &frames,
            nominal_us,
            wall_us,
            Lane::Backfill,
            FragmentAudio::Carried(&audio),
        ) {
            bump(&self.stats.backfill_written, 1);
            self.status.update(&endpoint, |s| {
                s.backfill_fragments += 1;
                s.last_backfill_us = Some(wall_us);
            });
            tracing::debug!(camera = %endpoint, record = group.id, frames = frames.len(), audio = audio.len(), capture_us = first.capture_us, last_us = last.capture_us, "backfilled GOP recorded");
            self.ack_when_durable(camera, Lane::Backfill, Stored::Backfill { id: group.id });
        }
    }

    fn open_segment(
        &mut self,
        camera: EndpointId,
        track: VideoTrack,
        capture_us: u64,
        wall_us: i64,
        lane: Lane,
    ) -> bool {
        let Some(cam) = self.cameras.get(&camera) else {
            return false;
        };
        let (endpoint, camera_id) = (cam.endpoint.clone(), cam.db_id);
        // Backfilled GOPs carry the audio the camera kept with them.
        let audio = cam.audio_track();
        let rel = match self.segment_path(&endpoint, wall_us) {
            Some(rel) => rel,
            None => return false,
        };
        let path = self.root.join(&rel);
        let file = match SegmentFile::create_av(
            self.storage.as_ref(),
            &path,
            &track,
            audio.as_ref(),
        ) {
            Ok(f) => f,
            Err(e) if is_disk_full(&e) => {
                bump(&self.stats.disk_full, 1);
                tracing::warn!(path = %path.display(), "disk full creating segment; applying retention");
                self.retention(FULL_DISK_MARGIN);
                match SegmentFile::create_av(self.storage.as_ref(), &path, &track, audio.as_ref()) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "cannot create segment: {e}");
                        return false;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot create segment: {e}");
                return false;
            }
        };
        let new = NewSegment {
            camera_id,
            path: &rel,
            start_us: wall_us,
            init_bytes: file.len() as i64,
            codec: &track.codec_string(),
            width: i64::from(track.width),
            height: i64::from(track.height),
            open: true,
            backfill: lane == Lane::Backfill,
        };
        let id = match self.db.insert_segment(&new).or_else(|e| {
            if e.is_disk_full() {
                self.retention(FULL_DISK_MARGIN);
                self.db.insert_segment(&new)
            } else {
                Err(e)
            }
        }) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(path = %rel, "cannot index new segment: {e}");
                let _ = self.storage.remove_file(&path);
                return false;
            }
        };
        bump(&self.stats.segments_opened, 1);
        bump(&self.stats.file_syncs, 1);
        bump(&self.stats.file_bytes, file.len());
        self.usage.add(camera_id, file.len());
        if let Some(cam) = self.cameras.get_mut(&camera) {
            *cam.lane(lane) = Some(OpenSegment {
                id,
                file,
                track,
                start_capture_us: capture_us,
                end_ticks: 0,
                next_capture_us: capture_us,
                next_sequence: 1,
                audio,
                audio_end_ticks: 0,
            });
        }
        if lane == Lane::Live {
            self.status.update(&endpoint, |s| {
                s.recording = true;
                s.segment_id = Some(id);
            });
        }
        self.retention(0);
        true
    }

    /// `<camera>/<yyyy-mm-dd>/<hh-mm-ss>.mp4` (UTC), with `_N` added when a
    /// segment already started in the same second.
    fn segment_path(&self, endpoint: &str, wall_us: i64) -> Option<String> {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_us) * 1000).ok()?;
        let day = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
        let stem = format!("{:02}-{:02}-{:02}", t.hour(), t.minute(), t.second());
        for n in 0..1000u32 {
            let name = if n == 0 {
                format!("{stem}.mp4")
            } else {
                format!("{stem}_{n}.mp4")
            };
            let rel = format!("{endpoint}/{day}/{name}");
            if !self.storage.exists(&self.root.join(&rel)) {
                return Some(rel);
            }
        }
        None
    }

    /// Writes and indexes one GOP with its audio; whether it is durable.
    fn append(
        &mut self,
        camera: EndpointId,
        frames: &[&Frame],
        nominal_us: u64,
        wall_us: i64,
        lane: Lane,
        audio: FragmentAudio<'_>,
    ) -> bool {
        let Some(cam) = self.cameras.get_mut(&camera) else {
            return false;
        };
        let endpoint = cam.endpoint.clone();
        let camera_db = cam.db_id;
        let CameraState {
            segment,
            backfill,
            audio: pending_audio,
            ..
        } = cam;
        let seg = match lane {
            Lane::Live => segment.as_mut(),
            Lane::Backfill => backfill.as_mut(),
        };
        let Some(seg) = seg else {
            return false;
        };
        let mut built = match build_fragment(
            frames,
            seg.next_sequence,
            seg.start_capture_us,
            seg.end_ticks,
            nominal_us,
            wall_us,
        ) {
            Ok(b) => b,
            Err(e) => {
                self.drop_fragment(&endpoint, &format!("cannot build fragment: {e}"));
                return false;
            }
        };
        let mut audio_end = seg.audio_end_ticks;
        if seg.audio.is_some() {
            // The audio captured during this GOP's time span goes with it.
            // The packet that straddles the segment's start is kept (it
            // plays from time zero, at most one packet early); older ones
            // are dropped.
            let until = frames.last().map_or(0, |f| f.capture_us + nominal_us);
            let from = seg.start_capture_us.saturating_sub(AUDIO_PACKET_US);
            let mut packets = Vec::new();
            let mut refs: Vec<&Frame> = Vec::new();
            let mut late = 0u64;
            match audio {
                FragmentAudio::Live => {
                    while pending_audio.front().is_some_and(|a| a.capture_us < until) {
                        if let Some(a) = pending_audio.pop_front() {
                            if a.capture_us > from {
                                packets.push(a);
                            } else {
                                late += 1;
                            }
                        }
                    }
                    refs.extend(packets.iter().map(|a| a.as_ref()));
                }
                FragmentAudio::Carried(carried) => {
                    for &a in carried {
                        if a.capture_us > from {
                            refs.push(a);
                        } else {
                            late += 1;
                        }
                    }
                }
            }
            bump(&self.stats.aux_dropped, late);
            match attach_audio(&mut built, &refs, seg.start_capture_us, seg.audio_end_ticks) {
                Ok(end) => audio_end = end,
                Err(e) => tracing::warn!(camera = %endpoint, "audio left out of a fragment: {e}"),
            }
        }
        let mut result = seg.file.append(&built);
        if let Err(e) = &result {
            if is_disk_full(e) {
                bump(&self.stats.disk_full, 1);
                tracing::warn!(camera = %endpoint, "disk full; deleting oldest recordings");
                self.retention(built.len() + FULL_DISK_MARGIN);
                result = match self
                    .cameras
                    .get_mut(&camera)
                    .and_then(|c| c.lane(lane).as_mut())
                {
                    Some(seg) => seg.file.append(&built),
                    None => return false,
                };
            }
        }
        let offset = match result {
            Ok(offset) => offset,
            Err(e) => {
                self.drop_fragment(&endpoint, &format!("write failed: {e}"));
                // A segment that cannot be appended to is ended; the next GOP
                // starts a new one (after retention made room, or not).
                self.close_lane(camera, lane);
                return false;
            }
        };
        let Some(seg) = self
            .cameras
            .get_mut(&camera)
            .and_then(|c| c.lane(lane).as_mut())
        else {
            return false;
        };
        let duration = built.duration_ticks();
        let row = FragmentRow {
            seq: i64::from(built.header.sequence),
            start_us: wall_us,
            duration_us: ticks_to_us(duration),
            offset: offset as i64,
            len: built.len() as i64,
            frames: frames.len() as i64,
        };
        seg.end_ticks = built.header.base_decode_time + duration;
        seg.audio_end_ticks = audio_end;
        seg.next_sequence = seg.next_sequence.wrapping_add(1);
        seg.next_capture_us = frames
            .last()
            .map_or(seg.next_capture_us, |f| f.capture_us + nominal_us);
        let seg_id = seg.id;
        let payload: u64 = frames.iter().map(|f| f.payload.len() as u64).sum();
        bump(&self.stats.fragments_written, 1);
        bump(&self.stats.payload_bytes, payload);
        bump(&self.stats.file_bytes, built.len());
        self.usage.add(camera_db, built.len());
        let origin = FragmentOrigin {
            capture_us: frames.first().map_or(0, |f| f.capture_us as i64),
            first_seq: frames.first().map_or(0, |f| f.sequence as i64),
        };
        let now = self.clock.wall_us();
        let pending = &mut self.pending;
        pending.batch.fragments.push((seg_id, row, origin));
        if !pending.lanes.contains(&(camera, lane)) {
            pending.lanes.push((camera, lane));
        }
        match pending
            .batch
            .seen
            .iter_mut()
            .find(|(id, _)| *id == camera_db)
        {
            Some(seen) => seen.1 = seen.1.max(now),
            None => pending.batch.seen.push((camera_db, now)),
        }
        pending.since.get_or_insert(self.clock.monotonic());
        if lane == Lane::Live {
            self.status
                .update(&endpoint, |s| s.last_fragment_us = Some(wall_us));
        }
        // Written; durable and indexed at the next flush.
        true
    }

    fn on_aux(&mut self, camera: EndpointId, frame: &Arc<Frame>) {
        let kind = match frame.channel {
            Channel::Telemetry => AuxKind::Telemetry,
            Channel::Event => AuxKind::Event,
            Channel::Audio => {
                // Held until the GOP covering its capture time is written.
                let Some(cam) = self.cameras.get_mut(&camera) else {
                    return;
                };
                if cam.audio_track().is_none() {
                    return;
                }
                if cam.audio.len() >= MAX_PENDING_AUDIO {
                    cam.audio.pop_front();
                    bump(&self.stats.aux_dropped, 1);
                }
                cam.audio.push_back(frame.clone());
                return;
            }
            _ => return,
        };
        let now = self.clock.wall_us();
        let Some(cam) = self.camera(camera, None) else {
            bump(&self.stats.aux_dropped, 1);
            return;
        };
        let time_us = cam.mapper.wall_us(frame.capture_us).unwrap_or(now);
        let db_id = cam.db_id;
        let Some(json) = aux_json(frame) else {
            bump(&self.stats.aux_dropped, 1);
            tracing::debug!(%camera, len = frame.payload.len(), "ignored a telemetry/event frame that is not JSON of at most 64 KiB");
            return;
        };
        let row = NewAux {
            kind,
            time_us,
            capture_us: frame.capture_us as i64,
            json,
        };
        // `false`: already stored (a relay forwards a row live and again
        // from its index).
        match self.db.insert_aux(db_id, &row) {
            Ok(_) => bump(&self.stats.aux_stored, 1),
            Err(e) => {
                bump(&self.stats.aux_dropped, 1);
                tracing::warn!(%camera, "cannot store {kind:?}: {e}");
            }
        }
    }

    /// A relay's batch of recorded telemetry and event rows: stored in one
    /// synced transaction (each row once), then acknowledged so the relay
    /// moves its watermark past them. Rows that are not JSON of at most
    /// [`MAX_AUX_BYTES`] are dropped and counted, and the batch still
    /// acknowledged (sending them again would not make them valid).
    fn on_aux_batch(&mut self, camera: EndpointId, id: u64, frames: &[Frame]) {
        let Some(cam) = self.camera(camera, None) else {
            bump(&self.stats.aux_dropped, frames.len() as u64);
            return;
        };
        let db_id = cam.db_id;
        let mut rows = Vec::with_capacity(frames.len());
        let mut invalid = 0u64;
        for frame in frames {
            let (Some(kind), Some(json)) = (AuxKind::of_channel(frame.channel), aux_json(frame))
            else {
                invalid += 1;
                continue;
            };
            // Mapped like live video while it is seen on this connection
            // (the upstream's recording timeline); the camera's own clock
            // otherwise, as for backfilled video.
            let time_us = cam
                .mapper
                .wall_us(frame.capture_us)
                .unwrap_or(frame.capture_us as i64);
            rows.push(NewAux {
                kind,
                time_us,
                capture_us: frame.capture_us as i64,
                json,
            });
        }
        bump(&self.stats.aux_dropped, invalid);
        let mut stored = self.db.insert_aux_durably(db_id, &rows);
        if stored.as_ref().is_err_and(DbError::is_disk_full) {
            bump(&self.stats.disk_full, 1);
            self.retention(FULL_DISK_MARGIN);
            stored = self.db.insert_aux_durably(db_id, &rows);
        }
        match stored {
            Ok(new) => {
                bump(&self.stats.aux_stored, new as u64);
                tracing::debug!(%camera, id, rows = rows.len(), new, "stored a relay's batch of telemetry and events");
                self.ack(camera, Stored::Aux { id });
            }
            // Not acknowledged: the relay sends the batch again.
            Err(e) => {
                tracing::warn!(%camera, id, "cannot store a relay's telemetry and events: {e}")
            }
        }
    }

    fn retention(&mut self, need_free: u64) {
        self.last_retention = self.clock.monotonic();
        let limits = retention::Limits {
            older_than_us: self
                .clock
                .wall_us()
                .saturating_sub(i64::from(self.cfg.max_age_days) * 86_400_000_000),
            max_total_bytes: gb_to_bytes(self.cfg.max_total_gb),
            max_camera_bytes: self.cfg.max_camera_gb.map(gb_to_bytes),
        };
        let protected: HashSet<i64> = self
            .cameras
            .values()
            .flat_map(|c| [&c.segment, &c.backfill])
            .filter_map(|s| s.as_ref().map(|s| s.id))
            .collect();
        match retention::enforce(
            &mut self.db,
            self.storage.as_ref(),
            &self.root,
            &limits,
            need_free,
            &protected,
            &mut self.usage,
        ) {
            Ok(r) => {
                bump(&self.stats.segments_deleted, r.segments_deleted);
                if need_free > 0 {
                    if let Err(e) = self.db.checkpoint() {
                        tracing::debug!("WAL checkpoint on a full disk: {e}");
                    }
                }
                if r.segments_deleted > 0 {
                    tracing::info!(
                        segments = r.segments_deleted,
                        bytes = r.bytes_freed,
                        "retention deleted recordings"
                    );
                }
            }
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    }
}

/// One frame interval: from the camera's declared rate, else the GOP's mean
/// spacing, else 30 fps.
fn nominal_frame_us(info: Option<&CameraInfo>, frames: &[&Frame]) -> u64 {
    if let Some(fps) = info.map(|i| i.fps_milli).filter(|&f| f > 0) {
        return 1_000_000_000 / u64::from(fps);
    }
    if let (Some(a), Some(b)) = (frames.first(), frames.last()) {
        if frames.len() > 1 && b.capture_us > a.capture_us {
            return (b.capture_us - a.capture_us) / (frames.len() as u64 - 1);
        }
    }
    33_333
}

/// A telemetry or event frame's JSON document, if it is JSON of at most
/// [`MAX_AUX_BYTES`].
fn aux_json(frame: &Frame) -> Option<&str> {
    std::str::from_utf8(&frame.payload).ok().filter(|text| {
        text.len() <= MAX_AUX_BYTES && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    })
}
