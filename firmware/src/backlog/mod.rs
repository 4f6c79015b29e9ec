//! Store-and-forward: while no uplink reaches the server, every GOP (with
//! the audio captured during it) goes to a bounded, crash-safe ring on the
//! data partition; once the server is back,
//! the ring is uploaded behind live video (backfill) and each GOP is
//! forgotten only when the server says it is recorded. Design and
//! invariants: docs/design/backlog.md.
//!
//! # Layout
//! * [`record`]: a GOP and its audio as a checksummed, versioned record (pure).
//! * [`ring`]: the chunk files, eviction, recovery (blocking file I/O).
//! * [`keeper`]: which GOPs must be kept (sans-IO state machine).
//! * [`upload`]: the backfill uploader and its pacer.
//!
//! [`Backlog`] is the shared handle: the ring behind a mutex, its file work
//! on the blocking pool, and a `watch` of its [`BacklogStatus`] for
//! telemetry. [`StoreForward`] is what the uplink drives.

pub mod keeper;
pub mod record;
pub mod ring;
pub mod upload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kodama_proto::Frame;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use keeper::{Keeper, KeeperLimits};
pub use record::Gop;
pub use ring::{Recovery, Ring, RingError, RingStatus};

/// `[backlog]` in `kodama.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacklogConfig {
    /// Keep video (and its audio) while the server is unreachable and
    /// upload it later.
    pub enabled: bool,
    /// Directory of the ring. Default: `backlog` next to the working
    /// directory; on the SD-card image `<data partition>/backlog`.
    pub dir: Option<PathBuf>,
    /// Disk budget in MB (10^6 bytes), video and audio together; the oldest
    /// GOPs go first beyond it.
    pub max_mb: u64,
    /// Long-run upload rate of backfill, kbit/s (on top of live video, and
    /// only from bandwidth live does not use).
    pub upload_kbps: u32,
    /// Seconds of live video kept in memory until the server confirms it,
    /// so a link that dies silently loses nothing before it is noticed.
    pub unconfirmed_s: u32,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        BacklogConfig {
            enabled: true,
            dir: None,
            max_mb: 512,
            upload_kbps: 2_000,
            unconfirmed_s: 15,
        }
    }
}

impl BacklogConfig {
    /// The ring directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from("backlog"))
    }

    /// The disk budget in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_mb.saturating_mul(1_000_000)
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000_000).contains(&self.max_mb) {
            return Err((
                "backlog.max_mb",
                format!("must be 1..=1000000, got {}", self.max_mb),
            ));
        }
        if !(50..=100_000).contains(&self.upload_kbps) {
            return Err((
                "backlog.upload_kbps",
                format!("must be 50..=100000, got {}", self.upload_kbps),
            ));
        }
        if !(1..=300).contains(&self.unconfirmed_s) {
            return Err((
                "backlog.unconfirmed_s",
                format!("must be 1..=300, got {}", self.unconfirmed_s),
            ));
        }
        Ok(())
    }

    /// The keeper's window.
    pub fn keeper_limits(&self) -> KeeperLimits {
        KeeperLimits {
            window_us: u64::from(self.unconfirmed_s) * 1_000_000,
            // At most 32 MiB in memory whatever the rate.
            max_bytes: 32 << 20,
        }
    }
}

/// What telemetry and the API show of the backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BacklogStatus {
    /// The ring's sizes and counters.
    #[serde(flatten)]
    pub ring: RingStatus,
    /// GOPs being uploaded and not yet acknowledged.
    pub in_flight: u32,
    /// Audio packets that could not go with a GOP (out of order, too old,
    /// or more than a GOP may wait for) since start.
    #[serde(default)]
    pub audio_dropped: u64,
}

#[derive(Debug)]
struct Shared {
    ring: Mutex<Ring>,
    status: watch::Sender<BacklogStatus>,
    in_flight: std::sync::atomic::AtomicU32,
    audio_dropped: std::sync::atomic::AtomicU64,
}

/// Shared handle to the ring; see the module docs.
#[derive(Debug, Clone)]
pub struct Backlog(Arc<Shared>);

/// Why the backlog could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening the backlog in {dir}: {source}")]
pub struct OpenError {
    /// The ring's directory.
    pub dir: PathBuf,
    /// What failed.
    pub source: RingError,
}

impl Backlog {
    /// Opens (recovering) the ring described by `cfg`.
    pub fn open(cfg: &BacklogConfig) -> Result<(Backlog, Recovery), OpenError> {
        let dir = cfg.dir();
        let (ring, recovery) = Ring::open(&dir, cfg.max_bytes()).map_err(|source| OpenError {
            dir: dir.clone(),
            source,
        })?;
        tracing::info!(
            dir = %dir.display(),
            pending = recovery.pending,
            torn_bytes = recovery.torn_bytes,
            "backlog opened"
        );
        let status = BacklogStatus {
            ring: ring.status(),
            ..BacklogStatus::default()
        };
        Ok((
            Backlog(Arc::new(Shared {
                ring: Mutex::new(ring),
                status: watch::channel(status).0,
                in_flight: Default::default(),
                audio_dropped: Default::default(),
            })),
            recovery,
        ))
    }

    /// Watches the status (changes after every store, upload and drop).
    pub fn status(&self) -> watch::Receiver<BacklogStatus> {
        self.0.status.subscribe()
    }

    fn changes(&self) -> watch::Receiver<BacklogStatus> {
        self.0.status.subscribe()
    }

    fn publish(&self, ring: &Ring) {
        let in_flight = self.0.in_flight.load(std::sync::atomic::Ordering::Relaxed);
        let audio_dropped = self
            .0
            .audio_dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        self.0.status.send_replace(BacklogStatus {
            ring: ring.status(),
            in_flight,
            audio_dropped,
        });
    }

    fn set_in_flight(&self, n: usize) {
        let n = n as u32;
        if self
            .0
            .in_flight
            .swap(n, std::sync::atomic::Ordering::Relaxed)
            != n
        {
            self.0.status.send_modify(|s| s.in_flight = n);
        }
    }

    fn set_audio_dropped(&self, n: u64) {
        if self
            .0
            .audio_dropped
            .swap(n, std::sync::atomic::Ordering::Relaxed)
            != n
        {
            self.0.status.send_modify(|s| s.audio_dropped = n);
        }
    }

    /// Runs `f` on the ring on the blocking pool, then publishes the status.
    async fn with_ring<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ring) -> T + Send + 'static,
    ) -> Option<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut ring = me.0.ring.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut ring);
            me.publish(&ring);
            out
        })
        .await
        .ok()
    }

    /// Writes GOPs to the ring, durably, oldest first. Failures are logged
    /// and counted by the ring; the caller carries on (live video matters
    /// more than the backlog).
    pub async fn store(&self, gops: Vec<Gop>) {
        if gops.is_empty() {
            return;
        }
        self.with_ring(move |ring| {
            for g in &gops {
                if let Err(e) = ring.append(g) {
                    tracing::warn!("backlog: cannot store a GOP: {e}");
                }
            }
        })
        .await;
    }

    /// The first pending record after `after`.
    pub fn next_pending(&self, after: Option<u64>) -> Option<u64> {
        let ring = self.0.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.next_pending(after)
    }

    /// Reads record `id` back.
    pub async fn read(&self, id: u64) -> Result<Gop, RingError> {
        self.with_ring(move |ring| ring.read(id))
            .await
            .unwrap_or(Err(RingError::Unknown(id)))
    }

    /// The server recorded `id`.
    pub async fn ack(&self, id: u64) -> Result<bool, RingError> {
        self.with_ring(move |ring| ring.ack(id))
            .await
            .unwrap_or(Ok(false))
    }

    /// Makes the acknowledgement cursor durable (at shutdown).
    pub async fn sync(&self) {
        if let Some(Err(e)) = self.with_ring(|ring| ring.persist_cursor()).await {
            tracing::warn!("backlog: cannot write the cursor: {e}");
        }
    }
}

/// The uplink's store-and-forward state: the keeper in front of the ring.
#[derive(Debug)]
pub struct StoreForward {
    keeper: Keeper,
    backlog: Backlog,
    upload_kbps: u32,
    keep: Vec<Gop>,
}

impl StoreForward {
    /// Store-and-forward into `backlog` with `cfg`'s limits.
    pub fn new(backlog: Backlog, cfg: &BacklogConfig) -> Self {
        Self {
            keeper: Keeper::new(cfg.keeper_limits()),
            backlog,
            upload_kbps: cfg.upload_kbps,
            keep: Vec::new(),
        }
    }

    /// The shared ring.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Upload settings.
    pub fn upload_options(&self) -> upload::UploadOptions {
        upload::UploadOptions {
            kbps: self.upload_kbps,
        }
    }

    async fn store_kept(&mut self) {
        if !self.keep.is_empty() {
            let gops = std::mem::take(&mut self.keep);
            self.backlog.store(gops).await;
        }
    }

    /// A video frame from the capture thread.
    pub async fn on_frame(&mut self, frame: Arc<Frame>) {
        self.keeper.on_frame(frame, &mut self.keep);
        // Completing a GOP may have dropped audio too old for it.
        self.backlog.set_audio_dropped(self.keeper.audio_dropped());
        self.store_kept().await;
    }

    /// The uplink reached or lost the server.
    pub async fn set_online(&mut self, online: bool) {
        self.keeper.set_online(online, &mut self.keep);
        self.store_kept().await;
    }

    /// An audio packet, numbered as the live audio stream numbers it: it is
    /// kept (or not) with the GOP whose time span it falls in.
    pub fn on_audio(&mut self, packet: Arc<Frame>) {
        self.keeper.on_audio(packet);
        self.backlog.set_audio_dropped(self.keeper.audio_dropped());
    }

    /// Live sending gave up the current GOP.
    pub fn live_lost(&mut self) {
        self.keeper.live_lost();
    }

    /// The live group of the GOP captured at `capture_us` left incomplete.
    pub async fn live_incomplete(&mut self, capture_us: u64) {
        self.keeper.live_incomplete(capture_us, &mut self.keep);
        self.store_kept().await;
    }

    /// The server recorded live video through `capture_us`.
    pub fn confirmed(&mut self, capture_us: u64) {
        self.keeper.confirmed(capture_us);
    }

    /// Stopping: keep what must be kept and make the cursor durable.
    pub async fn flush(&mut self) {
        self.keeper.flush(&mut self.keep);
        self.store_kept().await;
        self.backlog.sync().await;
    }
}

/// How long the uplink waits for the capture thread to hand over its last
/// frames when stopping (it stops within one frame interval).
pub const DRAIN_ON_STOP: Duration = Duration::from_secs(2);
