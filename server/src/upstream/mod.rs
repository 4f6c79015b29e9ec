//! Forwarding cameras to upstream Kodama servers (`[[upstream]]`): an
//! offsite copy that survives a stolen box, or a site relay's uplink.
//!
//! Per upstream, a feed from the hub (like the recorder's: whole GOPs,
//! camera backfill, arrivals; bounded, never blocks routing) goes to a
//! dispatcher that starts one forwarder per forwarded camera. Each
//! forwarder holds one connection to the upstream on the relay ALPN
//! (`kodama/relay/1`), dialled with this server's own key, saying which
//! camera it carries ([`kodama_proto::Message::RelayHello`]). On it:
//!
//! * the camera's state: `StreamInfo` while it is online here, `CameraState`
//!   offline otherwise, so the upstream mirrors it;
//! * live video, frame by frame from the hub as a viewer gets it (one
//!   stream per GOP, newest first, superseded GOPs reset), within the
//!   upstream's bandwidth cap ([`pace::Pace`]): when live cannot keep up
//!   the forwarder skips to the newest GOP;
//! * telemetry and events;
//! * backfill ([`kodama_net::backfill`], lowest priority): every GOP the
//!   upstream has not acknowledged as recorded — the link was down, its live
//!   copy was cut short, or the camera uploaded it late here — is sent
//!   whole, oldest first, with its original capture times and sequence
//!   numbers, behind live.
//!
//! Where the backlog lives depends on the origin ([`Origin`]):
//!
//! * a recording server forwards from its own recordings
//!   ([`recorded`]): per upstream, camera and lane a watermark in the
//!   SQLite index, moved only by the upstream's `Stored` acknowledgements;
//!   after an outage, or a restart of the origin during one, everything
//!   past it is read back from the fMP4 segments and sent. Memory holds a
//!   window of index rows and at most [`BACKFILL_IN_FLIGHT`] GOPs; disk
//!   holds nothing beyond the recordings (their retention bounds the
//!   outage an upstream can catch up on).
//! * a relay-only node (`kodama-server relay`) records nothing: it keeps
//!   the GOPs in a bounded memory buffer ([`pending::Pending`], `buffer_mb`
//!   per camera and upstream) and passes the upstream's acknowledgements on
//!   to the camera, so the camera's own crash-safe store-and-forward keeps
//!   whatever the upstream has not recorded (a relay restart loses only the
//!   buffer, which the cameras still hold).
//!
//! Forwarding never slows the origin: the feed drops whole GOPs rather than
//! wait, the live path only reads the hub's groups, the index and the
//! segment files are read on the blocking pool, and the recorder's own
//! writes never wait on a forwarder (SQLite WAL: readers do not block the
//! writer; a watermark is one small row written at most every
//! [`recorded::SCAN_EVERY`]).
//!
//! Channels: the hub's feed per upstream ([`FEED_QUEUE`]); per camera a
//! bounded `mpsc` of completed GOPs ([`CAMERA_QUEUE`]) from the dispatcher;
//! backfill sends run as tasks (at most [`BACKFILL_IN_FLIGHT`] at once and
//! [`BACKFILL_UNACKNOWLEDGED`] GOPs per camera sent and not yet acknowledged).

pub mod aux;
pub mod pace;
pub mod pending;
pub mod recorded;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodama_net::control::ControlStream;
use kodama_net::error::HelloError;
use kodama_net::link::{self, LinkProfile};
use kodama_net::media_send::{MediaSender, SendOutcome};
use kodama_net::{codes, Connection, Endpoint, EndpointAddr, EndpointId};
use kodama_proto::{CameraSelector, ClientHandshake, Frame, Message, Stored, ALPN_RELAY};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, PeerRole};
use crate::config::ConfigError;
use crate::db::{AuxKind, Db, DbError, ForwardAux, ForwardFragment, RecordedLane};
use crate::feed::{self, FeedEvent, FeedSender, Group};
use crate::hub::{CameraStatus, CameraTrack, Hub, LiveGroup};
use aux::AuxProgress;
use pace::Pace;
use pending::{Pending, Source};
use recorded::Progress;

/// Events queued per upstream between the hub and its dispatcher.
pub const FEED_QUEUE: usize = 256;

/// Completed GOPs queued per forwarded camera.
pub const CAMERA_QUEUE: usize = 64;

/// Backfill streams a forwarder writes at once.
pub const BACKFILL_IN_FLIGHT: usize = 3;

/// Backfilled GOPs sent and not yet acknowledged: the upstream acknowledges
/// once per commit (every few seconds), so this, not the link, bounds the
/// backfill rate (e.g. 64 one-second GOPs per 5 s commit interval).
pub const BACKFILL_UNACKNOWLEDGED: usize = 64;

/// Longest a connection attempt (dial and hello) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnect backoff: first wait and cap.
const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often a forwarder's progress is logged.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

/// `[[upstream]]`: one server this one forwards cameras to.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The upstream's ticket (`<data>/server-ticket` there).
    pub ticket: Option<String>,
    /// Or its node id (`kodama-server id` there), with `addrs` in offline mode.
    pub node_id: Option<String>,
    /// Direct addresses of the upstream (HOST:PORT).
    pub addrs: Vec<SocketAddr>,
    /// Cameras to forward, by name or node id on this server (empty: all).
    pub cameras: Vec<String>,
    /// Forward live video as it arrives.
    pub live: bool,
    /// Keep what the upstream has not recorded and send it later as
    /// backfill, so its copy has no gap.
    pub recordings: bool,
    /// Bandwidth cap in kbit/s for everything sent to this upstream (0: none).
    pub max_kbps: u32,
    /// Relay-only mode: memory per forwarded camera for GOPs not yet
    /// recorded upstream, in MiB (a recording server forwards from its
    /// recordings instead).
    pub buffer_mb: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            ticket: None,
            node_id: None,
            addrs: Vec::new(),
            cameras: Vec::new(),
            live: true,
            recordings: true,
            max_kbps: 0,
            buffer_mb: 256,
        }
    }
}

impl UpstreamConfig {
    /// Checks the section (`index` names it in errors).
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let field = |f: &str| format!("upstream[{index}].{f}");
        if self.ticket.is_some() == self.node_id.is_some() {
            return Err(ConfigError::Invalid {
                field: field("ticket"),
                message: "give the upstream's ticket or its node_id (one of them)".into(),
            });
        }
        self.dial_addr().map_err(|e| ConfigError::Invalid {
            field: field(if self.ticket.is_some() {
                "ticket"
            } else {
                "node_id"
            }),
            message: e.to_string(),
        })?;
        if !self.live && !self.recordings {
            return Err(ConfigError::Invalid {
                field: field("live"),
                message: "live and recordings are both off: nothing to forward".into(),
            });
        }
        if self.recordings && self.buffer_mb == 0 {
            return Err(ConfigError::Invalid {
                field: field("buffer_mb"),
                message: "must be at least 1 with recordings = true".into(),
            });
        }
        if self.buffer_mb > 64 * 1024 {
            return Err(ConfigError::Invalid {
                field: field("buffer_mb"),
                message: "at most 65536 (64 GiB)".into(),
            });
        }
        Ok(())
    }

    /// Where to dial.
    pub fn dial_addr(&self) -> Result<EndpointAddr, kodama_net::endpoint::EndpointError> {
        kodama_net::endpoint::dial_addr(
            self.ticket.as_deref(),
            self.node_id.as_deref(),
            &self.addrs,
        )
    }

    fn forwards(&self, allowlist: &Allowlist, camera: &EndpointId) -> bool {
        self.cameras.is_empty()
            || self.cameras.iter().any(|c| {
                allowlist
                    .resolve(PeerRole::Camera, c)
                    .is_some_and(|p| p.id == *camera)
                    || kodama_net::endpoint::parse_endpoint_id(c).is_ok_and(|id| id == *camera)
            })
    }
}

/// Forwarders waiting for the hub and the endpoint.
#[derive(Debug)]
pub struct Upstreams {
    feeds: Vec<(UpstreamConfig, mpsc::Receiver<FeedEvent>)>,
}

/// Feeds for the hub (one per upstream) and the forwarders to start once
/// the hub and the endpoint exist.
pub fn feeds(configs: &[UpstreamConfig]) -> (Vec<FeedSender>, Upstreams) {
    let mut senders = Vec::new();
    let mut feeds = Vec::new();
    for c in configs {
        let (tx, rx) = feed::channel("upstream", FEED_QUEUE);
        senders.push(tx);
        feeds.push((c.clone(), rx));
    }
    (senders, Upstreams { feeds })
}

/// What the forwarding server is, which decides where its backlog lives.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A recording server with this data directory: forward from the
    /// recordings, watermarks in its index.
    Recorder {
        /// `[server] data_dir`.
        data_dir: PathBuf,
    },
    /// A relay-only node: a bounded memory buffer, and the upstream's
    /// acknowledgements passed on to the cameras.
    Relay,
}

/// A recording origin's index and recordings, shared by the forwarders of
/// one upstream (one connection to the index each upstream).
#[derive(Debug)]
struct Store {
    db: Arc<Mutex<Db>>,
    root: PathBuf,
}

/// What every forwarder of one upstream shares.
#[derive(Debug)]
struct Shared {
    config: UpstreamConfig,
    addr: EndpointAddr,
    endpoint: Endpoint,
    hub: Arc<Hub>,
    pace: Mutex<Pace>,
    ack_through: bool,
    store: Option<Store>,
}

impl Upstreams {
    /// Starts every forwarder; they stop when `cancel` fires.
    pub fn start(
        self,
        endpoint: Endpoint,
        hub: Arc<Hub>,
        allowlist: Arc<Allowlist>,
        origin: Origin,
        cancel: CancellationToken,
    ) -> anyhow::Result<JoinSet<()>> {
        let mut tasks = JoinSet::new();
        for (config, rx) in self.feeds {
            let addr = config.dial_addr()?;
            tracing::info!(upstream = %addr.id, cameras = ?config.cameras, live = config.live, recordings = config.recordings, max_kbps = config.max_kbps, "forwarding to an upstream server");
            let store = match (&origin, config.recordings) {
                (Origin::Recorder { data_dir }, true) => Some(Store {
                    db: Arc::new(Mutex::new(Db::open(&crate::recorder::db_path(data_dir))?)),
                    root: crate::recorder::recordings_dir(data_dir),
                }),
                _ => None,
            };
            let shared = Arc::new(Shared {
                pace: Mutex::new(Pace::new(config.max_kbps, Instant::now())),
                config,
                addr,
                endpoint: endpoint.clone(),
                hub: hub.clone(),
                ack_through: matches!(origin, Origin::Relay),
                store,
            });
            tasks.spawn(dispatch(shared, allowlist.clone(), rx, cancel.clone()));
        }
        Ok(tasks)
    }
}

/// Routes one upstream's feed to its camera forwarders, starting them as
/// cameras appear.
async fn dispatch(
    shared: Arc<Shared>,
    allowlist: Arc<Allowlist>,
    mut rx: mpsc::Receiver<FeedEvent>,
    cancel: CancellationToken,
) {
    let mut cameras: HashMap<EndpointId, mpsc::Sender<(Arc<Group>, Source)>> = HashMap::new();
    let mut forwarders = JoinSet::new();
    // After a restart, cameras that are not back yet may still have
    // recordings the upstream lacks: their forwarders start now.
    for camera in forwarded_before(&shared).await {
        if !shared.config.forwards(&allowlist, &camera) {
            continue;
        }
        if let Some(track) = shared.hub.find(&CameraSelector::Id(*camera.as_bytes())) {
            let (tx, crx) = mpsc::channel(CAMERA_QUEUE);
            forwarders.spawn(forward(shared.clone(), track, crx, cancel.child_token()));
            cameras.insert(camera, tx);
        }
    }
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = forwarders.join_next(), if !forwarders.is_empty() => continue,
            e = rx.recv() => match e { Some(e) => e, None => break },
        };
        let (camera, gop) = match event {
            FeedEvent::CameraOnline { camera, .. } => (camera, None),
            FeedEvent::Group { camera, group } => (camera, Some((group, Source::Live))),
            FeedEvent::Backfill { camera, group } => {
                let id = group.id;
                (camera, Some((group, Source::CameraBackfill(id))))
            }
            // Telemetry and events go live from the camera's track, and
            // from the index after an outage.
            FeedEvent::Aux { .. }
            | FeedEvent::AuxBatch { .. }
            | FeedEvent::CameraOffline { .. } => continue,
        };
        let tx = match cameras.get(&camera) {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                if !shared.config.forwards(&allowlist, &camera) {
                    continue;
                }
                let Some(track) = shared.hub.find(&CameraSelector::Id(*camera.as_bytes())) else {
                    continue;
                };
                let (tx, crx) = mpsc::channel(CAMERA_QUEUE);
                forwarders.spawn(forward(shared.clone(), track, crx, cancel.child_token()));
                cameras.insert(camera, tx.clone());
                tx
            }
        };
        if let Some(gop) = gop {
            // A recording origin reads its backlog back from the recordings.
            let buffered = shared.config.recordings && shared.store.is_none();
            if buffered && tx.try_send(gop).is_err() {
                tracing::warn!(%camera, upstream = %shared.addr.id, "forwarder is behind; a GOP will be missing upstream");
            }
        }
    }
    cancel.cancel();
    while forwarders.join_next().await.is_some() {}
}

/// The cameras a recording origin has forwarded to this upstream before
/// (a watermark exists).
async fn forwarded_before(shared: &Shared) -> Vec<EndpointId> {
    let Some(store) = &shared.store else {
        return Vec::new();
    };
    let db = store.db.clone();
    let upstream = shared.addr.id.to_string();
    let listed = tokio::task::spawn_blocking(move || {
        db.lock()
            .unwrap_or_else(|p| p.into_inner())
            .upstream_cameras(&upstream)
    })
    .await;
    match listed {
        Ok(Ok(ids)) => ids
            .iter()
            .filter_map(|id| kodama_net::endpoint::parse_endpoint_id(id).ok())
            .collect(),
        Ok(Err(e)) => {
            tracing::warn!(upstream = %shared.addr.id, "cannot list the cameras forwarded before: {e}");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("{0}")]
    Connect(String),
    #[error("the upstream refused: {0}")]
    Refused(String),
}

async fn dial(
    shared: &Shared,
    status: &CameraStatus,
) -> Result<(Connection, ControlStream), DialError> {
    let conn = link::connect(
        &shared.endpoint,
        shared.addr.clone(),
        ALPN_RELAY,
        LinkProfile::Live,
    )
    .await
    .map_err(|e| DialError::Connect(e.to_string()))?;
    let handshake = ClientHandshake::relay(*status.id.as_bytes(), status.info.clone());
    match ControlStream::hello(&conn, handshake, CONNECT_TIMEOUT).await {
        Ok((control, _server)) => Ok((conn, control)),
        Err(HelloError::Handshake(e @ kodama_proto::HandshakeError::Rejected { .. })) => {
            Err(DialError::Refused(e.to_string()))
        }
        Err(e) => Err(DialError::Connect(e.to_string())),
    }
}

/// What a forwarder keeps for its upstream until the upstream confirms
/// storing it.
#[derive(Debug)]
enum Backlog {
    /// GOPs in memory (relay-only mode, or `recordings = false`: empty).
    Memory(Pending),
    /// The origin's recordings, telemetry and events past the watermarks.
    Recorded(Box<FromIndex>),
}

/// Where forwarding from a recording origin's index stands.
#[derive(Debug)]
struct FromIndex {
    /// Recorded GOPs.
    gops: Progress,
    /// Telemetry and events.
    aux: AuxProgress,
}

/// A GOP due for backfill.
enum Due {
    /// Held in memory, by its wire id.
    Group(u64, Arc<Group>),
    /// To read back from the recordings.
    Recorded(ForwardFragment),
}

/// How one backfill send ended, by wire id.
#[derive(Debug)]
enum Sent {
    Out,
    Failed,
    Unreadable(recorded::LoadError),
}

impl Backlog {
    /// The live group of the GOP captured at `capture_us` did not leave
    /// whole (superseded with frames unsent, or a frame dropped): its live
    /// acknowledgement must not count, backfill sends it again.
    fn live_incomplete(&mut self, capture_us: u64) {
        match self {
            Backlog::Memory(p) => p.live_incomplete(capture_us),
            Backlog::Recorded(p) => p.gops.live_incomplete(capture_us),
        }
    }

    fn live_sent(&mut self, capture_us: u64, frames: usize, now: Instant) {
        match self {
            Backlog::Memory(p) => p.live_sent(capture_us, frames),
            Backlog::Recorded(p) => p.gops.live_sent(capture_us, frames, now),
        }
    }

    fn push(&mut self, group: Arc<Group>, source: Source, now: Instant) {
        if let Backlog::Memory(p) = self {
            p.push(group, source, now);
        }
    }

    fn next_due(&mut self, now: Instant) -> Option<Due> {
        match self {
            Backlog::Memory(p) => p.next_due(now).map(|(id, g)| Due::Group(id, g)),
            Backlog::Recorded(p) => p.gops.next_due(now).map(Due::Recorded),
        }
    }

    fn in_flight(&self, now: Instant) -> usize {
        match self {
            Backlog::Memory(p) => p.in_flight(now),
            Backlog::Recorded(p) => p.gops.in_flight(now),
        }
    }

    fn send_failed(&mut self, id: u64, now: Instant) {
        match self {
            Backlog::Memory(p) => p.send_failed(id, now),
            Backlog::Recorded(p) => p.gops.send_failed(id),
        }
    }

    fn connected(&mut self) {
        if let Backlog::Memory(p) = self {
            p.connected();
        }
    }

    fn disconnected(&mut self, now: Instant) {
        match self {
            Backlog::Memory(p) => p.disconnected(now),
            Backlog::Recorded(p) => {
                p.gops.disconnected();
                p.aux.disconnected();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Backlog::Memory(p) => p.next_deadline(),
            // Its deadlines are looked at on every index scan.
            Backlog::Recorded(_) => None,
        }
    }

    /// The upstream stored a GOP or a batch of telemetry and events; the
    /// acknowledgement to pass on to the camera when a GOP leaves a memory
    /// buffer.
    fn stored(&mut self, stored: Stored) -> Option<Stored> {
        match self {
            Backlog::Memory(p) => match stored {
                Stored::LiveThrough { capture_us } => {
                    p.live_acknowledged(capture_us).map(|s| (capture_us, s))
                }
                Stored::Backfill { id } => p.backfill_acknowledged(id).map(|s| (id, s)),
                // Only an index sends batches.
                Stored::Aux { .. } => None,
            }
            .map(|(capture_us, source)| match source {
                Source::Live => Stored::LiveThrough { capture_us },
                Source::CameraBackfill(id) => Stored::Backfill { id },
            }),
            Backlog::Recorded(p) => {
                match stored {
                    Stored::LiveThrough { capture_us } => p.gops.live_acknowledged(capture_us),
                    Stored::Backfill { id } => p.gops.backfill_acknowledged(id),
                    Stored::Aux { id } => {
                        p.aux.acknowledged(id);
                    }
                }
                None
            }
        }
    }

    /// `(waiting, acknowledged or confirmed, evicted or skipped)` for logs.
    fn counts(&self) -> (usize, u64, u64) {
        match self {
            Backlog::Memory(p) => {
                let s = p.stats();
                (s.gops, s.acknowledged, s.evicted)
            }
            Backlog::Recorded(p) => {
                let s = p.gops.stats();
                (s.waiting, s.confirmed, s.skipped)
            }
        }
    }
}

/// The watermarks of `camera` at `upstream`, starting them at the newest
/// recorded fragment, telemetry sample and event when forwarding to this
/// upstream begins (what was recorded before the `[[upstream]]` existed is
/// not sent).
fn load_watermarks(db: &Db, upstream: &str, camera: &str) -> Result<FromIndex, DbError> {
    let now_us = crate::stats::now_us() as i64;
    let mut marks = [(0, 0); 2];
    for (i, lane) in RecordedLane::ALL.into_iter().enumerate() {
        marks[i] = match db.upstream_watermark(upstream, camera, lane)? {
            Some(w) => w,
            None => {
                let start = db.newest_fragment(camera, lane)?.unwrap_or((0, 0));
                db.set_upstream_watermark(upstream, camera, lane, start, now_us)?;
                start
            }
        };
    }
    let mut aux_marks = [0; 2];
    for (i, kind) in AuxKind::ALL.into_iter().enumerate() {
        aux_marks[i] = match db.upstream_aux_watermark(upstream, camera, kind)? {
            Some(w) => w,
            None => {
                let start = db.newest_aux(kind, camera)?.unwrap_or(0);
                db.set_upstream_aux_watermark(upstream, camera, kind, start, now_us)?;
                start
            }
        };
    }
    Ok(FromIndex {
        gops: Progress::new(marks[0], marks[1]),
        aux: AuxProgress::new(aux_marks[0], aux_marks[1]),
    })
}

/// Saves the watermarks that moved and reads the fragments past them.
type Scanned = (
    Vec<(RecordedLane, (i64, i64))>,
    Vec<(RecordedLane, (i64, i64), Vec<ForwardFragment>)>,
);

fn sync_index(
    db: &Db,
    upstream: &str,
    camera: &str,
    unsaved: &[(RecordedLane, (i64, i64))],
    read_from: Option<[(RecordedLane, (i64, i64)); 2]>,
) -> Result<Scanned, DbError> {
    let now_us = crate::stats::now_us() as i64;
    for (lane, at) in unsaved {
        db.set_upstream_watermark(upstream, camera, *lane, *at, now_us)?;
    }
    let mut windows = Vec::new();
    for (lane, from) in read_from.into_iter().flatten() {
        let rows = db.fragments_after(camera, lane, from, recorded::WINDOW as i64)?;
        windows.push((lane, from, rows));
    }
    Ok((unsaved.to_vec(), windows))
}

/// Saves the telemetry and event watermarks that moved and reads the rows
/// past those `read_from` names.
type AuxScanned = (Vec<(AuxKind, i64)>, Vec<(AuxKind, i64, Vec<ForwardAux>)>);

fn sync_aux(
    db: &Db,
    upstream: &str,
    camera: &str,
    unsaved: &[(AuxKind, i64)],
    read_from: &[(AuxKind, i64)],
) -> Result<AuxScanned, DbError> {
    let now_us = crate::stats::now_us() as i64;
    for (kind, at) in unsaved {
        db.set_upstream_aux_watermark(upstream, camera, *kind, *at, now_us)?;
    }
    let mut read = Vec::new();
    for (kind, from) in read_from {
        let rows = db.aux_after(*kind, camera, *from, aux::BATCH_ROWS as i64)?;
        read.push((*kind, *from, rows));
    }
    Ok((unsaved.to_vec(), read))
}

/// Saves moved watermarks and, with `read`, refreshes the windows past them
/// and reads the telemetry and events due (on the blocking pool; the
/// forwarder waits, the recorder does not).
async fn scan(shared: &Shared, camera: EndpointId, backlog: &mut Backlog, read: bool) {
    let (Some(store), Backlog::Recorded(progress)) = (&shared.store, backlog) else {
        return;
    };
    let unsaved = progress.gops.unsaved();
    let aux_unsaved = progress.aux.unsaved();
    if unsaved.is_empty() && aux_unsaved.is_empty() && !read {
        return;
    }
    let read_from =
        read.then(|| RecordedLane::ALL.map(|lane| (lane, progress.gops.watermark(lane))));
    let aux_from = if read {
        progress.aux.wants_rows(Instant::now())
    } else {
        Vec::new()
    };
    let db = store.db.clone();
    let upstream = shared.addr.id.to_string();
    let cam = camera.to_string();
    let done = tokio::task::spawn_blocking(move || {
        let db = db.lock().unwrap_or_else(|p| p.into_inner());
        let gops = sync_index(&db, &upstream, &cam, &unsaved, read_from)?;
        let aux = sync_aux(&db, &upstream, &cam, &aux_unsaved, &aux_from)?;
        Ok::<_, DbError>((gops, aux))
    })
    .await;
    match done {
        Ok(Ok(((saved, windows), (aux_saved, aux_read)))) => {
            for (lane, at) in saved {
                progress.gops.saved(lane, at);
            }
            for (lane, from, rows) in windows {
                progress.gops.refresh(lane, from, rows);
            }
            for (kind, at) in aux_saved {
                progress.aux.saved(kind, at);
            }
            let now = Instant::now();
            for (kind, from, rows) in aux_read {
                progress.aux.refresh(kind, from, rows, now);
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(%camera, upstream = %shared.addr.id, "forwarding cannot read or update the index: {e}")
        }
        Err(e) => tracing::warn!(%camera, "index scan failed: {e}"),
    }
}

/// Forwards one camera to one upstream until cancelled.
async fn forward(
    shared: Arc<Shared>,
    track: Arc<CameraTrack>,
    mut gops: mpsc::Receiver<(Arc<Group>, Source)>,
    cancel: CancellationToken,
) {
    let camera = track.id;
    let upstream = shared.addr.id;
    let mut backlog = match &shared.store {
        Some(store) => {
            let db = store.db.clone();
            let (up, cam) = (upstream.to_string(), camera.to_string());
            let loaded = tokio::task::spawn_blocking(move || {
                let db = db.lock().unwrap_or_else(|p| p.into_inner());
                load_watermarks(&db, &up, &cam)
            })
            .await;
            match loaded {
                Ok(Ok(p)) => Backlog::Recorded(Box::new(p)),
                Ok(Err(e)) => {
                    tracing::error!(%camera, %upstream, "cannot read where forwarding stands in the index: {e}; forwarding live only");
                    Backlog::Memory(Pending::new(0))
                }
                Err(e) => {
                    tracing::error!(%camera, %upstream, "cannot start forwarding: {e}");
                    return;
                }
            }
        }
        None if shared.config.recordings => {
            Backlog::Memory(Pending::new(shared.config.buffer_mb as usize * 1024 * 1024))
        }
        None => Backlog::Memory(Pending::new(0)),
    };
    let mut backoff = BACKOFF_INITIAL;
    let mut refused_logged = false;
    loop {
        // Dial, taking completed GOPs in meanwhile.
        let status = track.current_status();
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, dial(&shared, &status));
        tokio::pin!(attempt);
        let dialled = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                g = gops.recv() => match g {
                    Some((g, source)) => backlog.push(g, source, Instant::now()),
                    None => return,
                },
                r = &mut attempt => break r,
            }
        };
        let (conn, control) = match dialled {
            Ok(Ok(c)) => c,
            Ok(Err(DialError::Refused(why))) => {
                if !refused_logged {
                    tracing::error!(%camera, %upstream, "{why}");
                    refused_logged = true;
                }
                backoff = BACKOFF_MAX;
                wait_taking(&mut gops, &mut backlog, backoff, &cancel).await;
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!(%camera, %upstream, "cannot reach the upstream: {e}");
                wait_taking(&mut gops, &mut backlog, backoff, &cancel).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                tracing::debug!(%camera, %upstream, "the upstream did not answer within {CONNECT_TIMEOUT:?}");
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        refused_logged = false;
        backoff = BACKOFF_INITIAL;
        scan(&shared, camera, &mut backlog, true).await;
        let (waiting, _, _) = backlog.counts();
        tracing::info!(%camera, %upstream, name = %track.current_status().info.name, waiting, "forwarding the camera upstream");
        backlog.connected();
        let stop = session(
            &shared,
            &track,
            conn,
            control,
            &mut gops,
            &mut backlog,
            &cancel,
        )
        .await;
        backlog.disconnected(Instant::now());
        scan(&shared, camera, &mut backlog, false).await;
        if stop {
            return;
        }
        let (waiting, _, _) = backlog.counts();
        tracing::warn!(%camera, %upstream, waiting, "link to the upstream lost; keeping what it has not recorded");
    }
}

/// Waits `d`, taking completed GOPs in.
async fn wait_taking(
    gops: &mut mpsc::Receiver<(Arc<Group>, Source)>,
    backlog: &mut Backlog,
    d: Duration,
    cancel: &CancellationToken,
) {
    let until = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(until) => return,
            g = gops.recv() => match g {
                Some((g, source)) => backlog.push(g, source, Instant::now()),
                None => return,
            },
        }
    }
}

fn state_message(s: &CameraStatus) -> Message {
    if s.online {
        Message::StreamInfo {
            camera: *s.id.as_bytes(),
            info: s.info.clone(),
        }
    } else {
        Message::CameraState {
            camera: *s.id.as_bytes(),
            online: false,
        }
    }
}

/// The live GOP being forwarded: the group, the next frame to hand over,
/// and its keyframe's capture time.
struct LiveCursor {
    group: Arc<LiveGroup>,
    next: usize,
    keyframe_us: Option<u64>,
    /// Every frame so far was queued whole; once one was not, the GOP's
    /// live acknowledgement no longer counts.
    whole: bool,
}

/// One connection's life; true when the forwarder must stop.
async fn session(
    shared: &Shared,
    track: &Arc<CameraTrack>,
    conn: Connection,
    control: ControlStream,
    gops: &mut mpsc::Receiver<(Arc<Group>, Source)>,
    backlog: &mut Backlog,
    cancel: &CancellationToken,
) -> bool {
    let camera = track.id;
    let upstream = shared.addr.id;
    let token = cancel.child_token();
    let _stop_writers = token.clone().drop_guard();
    let mut media = MediaSender::new(conn.clone(), token.clone());
    let (mut ctl_rx, mut ctl_tx) = control.split();
    let mut status = track.status();
    let first = status.borrow_and_update().clone();
    if ctl_tx.send(&state_message(&first)).await.is_err() {
        return false;
    }
    let mut groups = track.groups();
    // Live starts at the current GOP's keyframe, as for a viewer: what
    // left before it is backfilled, nothing after it waits for a grace.
    let mut seen_group: Option<u64> = None;
    let mut current: Option<LiveCursor> = None;
    let mut frames_rx: Option<tokio::sync::watch::Receiver<usize>> = None;
    let mut aux = track.aux();
    let mut aux_sequence = 0u64;
    let mut backfills: JoinSet<(u64, Sent)> = JoinSet::new();
    // Telemetry/event batches being sent: batch id, whether it went out.
    let mut aux_sends: JoinSet<(u64, bool)> = JoinSet::new();
    let mut rescan = tokio::time::interval(recorded::SCAN_EVERY);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    let reads_index = shared.store.is_some() && matches!(backlog, Backlog::Recorded(_));
    let silent = link::until_silent(&conn, link::SILENCE);
    tokio::pin!(silent);
    let mut last_log = Instant::now();
    let mut backfill_bytes = 0u64;
    loop {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        if shared.config.live {
            // The newest GOP, once one begins.
            let newest = groups.borrow_and_update().clone();
            if let Some(newest) = newest {
                if seen_group.is_none_or(|s| newest.id > s) {
                    seen_group = Some(newest.id);
                    hand_over(shared, &mut current, &mut media, backlog, now, &mut wake);
                    frames_rx = Some(newest.subscribe().0);
                    current = Some(LiveCursor {
                        group: newest,
                        next: 0,
                        keyframe_us: None,
                        whole: true,
                    });
                }
            }
            if let Some(rx) = &mut frames_rx {
                rx.borrow_and_update();
            }
            hand_over(shared, &mut current, &mut media, backlog, now, &mut wake);
        }
        while backfills.len() < BACKFILL_IN_FLIGHT
            && backlog.in_flight(now) < BACKFILL_UNACKNOWLEDGED
        {
            let Some(due) = backlog.next_due(now) else {
                break;
            };
            let (id, bytes) = match &due {
                Due::Group(id, group) => (*id, group.payload_bytes()),
                Due::Recorded(f) => (recorded::wire_id(f), f.len.max(0) as usize),
            };
            let paced = shared
                .pace
                .lock()
                .map(|mut p| p.take_backfill(bytes, now))
                .unwrap_or(true);
            if !paced {
                backlog.send_failed(id, now);
                let retry = now + Duration::from_millis(50);
                wake = Some(wake.map_or(retry, |w| w.min(retry)));
                break;
            }
            backfill_bytes += bytes as u64;
            let conn = conn.clone();
            let root = shared.store.as_ref().map(|s| s.root.clone());
            backfills.spawn(async move {
                let group = match (due, root) {
                    (Due::Group(_, group), _) => group,
                    (Due::Recorded(f), Some(root)) => {
                        match tokio::task::spawn_blocking(move || recorded::load_group(&root, &f))
                            .await
                        {
                            Ok(Ok(group)) => Arc::new(group),
                            Ok(Err(e)) => return (id, Sent::Unreadable(e)),
                            Err(_) => return (id, Sent::Failed),
                        }
                    }
                    (Due::Recorded(_), None) => return (id, Sent::Failed),
                };
                let sent =
                    kodama_net::backfill::send_backfill_group(&conn, id, &group.frames).await;
                (
                    id,
                    if sent.is_ok() {
                        Sent::Out
                    } else {
                        Sent::Failed
                    },
                )
            });
        }
        if let Backlog::Recorded(p) = backlog {
            while let Some(batch) = p.aux.next_batch(now) {
                let paced = shared
                    .pace
                    .lock()
                    .map(|mut bucket| bucket.take_backfill(batch.bytes(), now))
                    .unwrap_or(true);
                if !paced {
                    // Read and offered again at the next scan.
                    p.aux.send_failed(batch.id);
                    break;
                }
                let conn = conn.clone();
                aux_sends.spawn(async move {
                    let frames = batch.frames();
                    let channel = batch.kind.channel();
                    let sent =
                        kodama_net::backfill::send_aux_batch(&conn, channel, batch.id, &frames)
                            .await;
                    (batch.id, sent.is_ok())
                });
            }
        }
        if let Some(due) = backlog.next_deadline() {
            wake = Some(wake.map_or(due, |w| w.min(due)));
        }
        if last_log.elapsed() >= PROGRESS_LOG_EVERY {
            last_log = Instant::now();
            let (waiting, acknowledged, lost) = backlog.counts();
            let aux_stats = match &*backlog {
                Backlog::Recorded(p) => p.aux.stats(),
                Backlog::Memory(_) => aux::AuxStats::default(),
            };
            tracing::info!(%camera, %upstream, waiting, acknowledged, lost, backfill_bytes, aux_rows_confirmed = aux_stats.confirmed, aux_batches = aux_stats.batches, "forwarding");
        }
        let sleep_until = wake.map_or_else(
            || tokio::time::Instant::now() + PROGRESS_LOG_EVERY,
            tokio::time::Instant::from_std,
        );
        tokio::select! {
            _ = cancel.cancelled() => {
                conn.close(codes::SHUTDOWN, b"origin shutting down");
                return true;
            }
            _ = conn.closed() => return false,
            quiet = &mut silent => {
                tracing::warn!(%camera, %upstream, "no word from the upstream for {quiet:?}; reconnecting");
                conn.close(codes::NORMAL, b"silent");
                return false;
            }
            _ = tokio::time::sleep_until(sleep_until) => {}
            r = groups.changed(), if shared.config.live => if r.is_err() { return true },
            _ = async {
                match &mut frames_rx {
                    Some(rx) => { let _ = rx.changed().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            r = status.changed() => {
                if r.is_err() { return true }
                let s = status.borrow_and_update().clone();
                if ctl_tx.send(&state_message(&s)).await.is_err() { return false }
            }
            a = aux.recv() => match a {
                Ok(frame) => {
                    aux_sequence += 1;
                    media.send(Arc::new(Frame { sequence: aux_sequence, ..Frame::clone(&frame) }));
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return true,
            },
            g = gops.recv() => match g {
                Some((g, source)) => backlog.push(g, source, Instant::now()),
                None => return true,
            },
            _ = rescan.tick(), if reads_index => {
                scan(shared, camera, backlog, true).await;
            }
            Some(done) = backfills.join_next(), if !backfills.is_empty() => match done {
                Ok((_, Sent::Out)) => {}
                Ok((id, Sent::Failed)) => backlog.send_failed(id, Instant::now()),
                Ok((id, Sent::Unreadable(e))) => {
                    tracing::warn!(%camera, %upstream, "a recorded GOP cannot be read back and will be missing upstream: {e}");
                    if let Backlog::Recorded(p) = backlog {
                        p.gops.skip(id);
                    }
                }
                Err(_) => {}
            },
            Some(done) = aux_sends.join_next(), if !aux_sends.is_empty() => {
                if let (Ok((id, false)), Backlog::Recorded(p)) = (done, &mut *backlog) {
                    p.aux.send_failed(id);
                }
            }
            m = ctl_rx.recv() => match m {
                Ok(Message::Stored(stored)) => {
                    let passed = backlog.stored(stored);
                    if let (true, Some(ack)) = (shared.ack_through, passed) {
                        shared.hub.acks().send(camera, ack);
                    }
                    if matches!(stored, Stored::Aux { .. }) && reads_index {
                        // Save the watermark; after a full batch, read the
                        // next one at once (catching up after an outage).
                        scan(shared, camera, backlog, true).await;
                    }
                }
                Ok(other) => tracing::debug!(%camera, %upstream, "ignoring {other:?}"),
                Err(_) => return false,
            },
        }
    }
}

/// Hands the live GOP's arrived frames to the sender within the cap;
/// `wake` is set to when the cap allows the next one.
fn hand_over(
    shared: &Shared,
    current: &mut Option<LiveCursor>,
    media: &mut MediaSender,
    backlog: &mut Backlog,
    now: Instant,
    wake: &mut Option<Instant>,
) {
    let Some(c) = current else { return };
    while let Some(frame) = c.group.get(c.next) {
        let fits = shared
            .pace
            .lock()
            .map(|mut p| {
                let ok = p.take_live(frame.payload.len(), now);
                if !ok {
                    let at = now
                        + p.wait_live(frame.payload.len())
                            .max(Duration::from_millis(1));
                    *wake = Some(wake.map_or(at, |w| w.min(at)));
                }
                ok
            })
            .unwrap_or(true);
        if !fits {
            return;
        }
        let keyframe_us = *c.keyframe_us.get_or_insert(frame.capture_us);
        let queued = media.send(frame) == SendOutcome::Queued;
        c.next += 1;
        c.whole &= queued;
        if c.whole {
            backlog.live_sent(keyframe_us, c.next, now);
        } else {
            backlog.live_incomplete(keyframe_us);
        }
        for capture_us in media.take_incomplete() {
            backlog.live_incomplete(capture_us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        kodama_net::SecretKey::generate().public().to_string()
    }

    #[test]
    fn upstream_sections_parse_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.toml");
        let node = id();
        std::fs::write(
            &path,
            format!(
                "[[upstream]]\nnode_id = \"{node}\"\naddrs = [\"127.0.0.1:7070\"]\ncameras = [\"porch\"]\nmax_kbps = 2000\n"
            ),
        )
        .expect("write");
        let c = crate::config::Config::load(&path).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.upstreams.len(), 1);
        let u = &c.upstreams[0];
        assert!(u.live && u.recordings, "both on by default");
        assert_eq!((u.max_kbps, u.buffer_mb), (2000, 256));
        assert_eq!(u.dial_addr().expect("addr").id.to_string(), node);

        let bad = |text: &str| {
            std::fs::write(&path, text).expect("write");
            match crate::config::Config::load(&path) {
                Ok(c) => c.validate().expect_err("invalid").to_string(),
                Err(e) => e.to_string(),
            }
        };
        assert!(bad("[[upstream]]\ncameras = []\n").starts_with("upstream[0].ticket"));
        assert!(bad("[[upstream]]\nnode_id = \"nope\"\n").starts_with("upstream[0].node_id"));
        assert!(bad(&format!(
            "[[upstream]]\nnode_id = \"{node}\"\nlive = false\nrecordings = false\n"
        ))
        .starts_with("upstream[0].live"));
        assert!(bad(&format!(
            "[[upstream]]\nnode_id = \"{node}\"\nbuffer_mb = 0\n"
        ))
        .starts_with("upstream[0].buffer_mb"));
        assert!(bad(&format!(
            "[[upstream]]\nnode_id = \"{node}\"\nmax_kpbs = 1\n"
        ))
        .contains("max_kpbs"));
    }

    #[test]
    fn cameras_are_chosen_by_name_or_id_or_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = Allowlist::new(dir.path().join("allowlist.toml"));
        let (porch, garden) = (
            kodama_net::SecretKey::generate().public(),
            kodama_net::SecretKey::generate().public(),
        );
        list.add(&porch.to_string(), PeerRole::Camera, "porch")
            .expect("add");
        list.add(&garden.to_string(), PeerRole::Camera, "garden")
            .expect("add");
        let all = UpstreamConfig::default();
        assert!(all.forwards(&list, &porch) && all.forwards(&list, &garden));
        let by_name = UpstreamConfig {
            cameras: vec!["porch".into()],
            ..UpstreamConfig::default()
        };
        assert!(by_name.forwards(&list, &porch) && !by_name.forwards(&list, &garden));
        let by_id = UpstreamConfig {
            cameras: vec![garden.to_string()],
            ..UpstreamConfig::default()
        };
        assert!(!by_id.forwards(&list, &porch) && by_id.forwards(&list, &garden));
    }
}
