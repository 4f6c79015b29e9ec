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
//!   copy was cut short, or the camera uploaded it late here — is kept in a
//!   bounded buffer ([`pending::Pending`]) and sent whole, oldest first,
//!   with its original capture times and sequence numbers, behind live.
//!
//! Forwarding never slows the origin: the feed drops whole GOPs rather than
//! wait, the live path only reads the hub's groups, and memory is bounded
//! by `buffer_mb` per camera and upstream.
//!
//! In relay-only mode (`kodama-server relay`, nothing recorded here) the
//! upstream's acknowledgements travel on to the camera (`ack_through`), so a
//! camera's own store-and-forward keeps what the upstream has not recorded.
//!
//! Channels: the hub's feed per upstream ([`FEED_QUEUE`]); per camera a
//! bounded `mpsc` of completed GOPs ([`CAMERA_QUEUE`]) from the dispatcher;
//! backfill sends run as tasks (at most [`BACKFILL_IN_FLIGHT`] GOPs per
//! camera sent and not yet acknowledged).

pub mod pace;
pub mod pending;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodama_net::control::ControlStream;
use kodama_net::link::{self, LinkProfile};
use kodama_net::media_send::MediaSender;
use kodama_net::{codes, Connection, Endpoint, EndpointAddr, EndpointId};
use kodama_proto::{CameraSelector, ClientHandshake, Frame, Message, Stored, ALPN_RELAY};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, PeerRole};
use crate::config::ConfigError;
use crate::feed::{self, FeedEvent, FeedSender, Group};
use crate::hub::{CameraStatus, CameraTrack, Hub, LiveGroup};
use pace::Pace;
use pending::{Pending, Source};

/// Events queued per upstream between the hub and its dispatcher.
pub const FEED_QUEUE: usize = 256;

/// Completed GOPs queued per forwarded camera.
pub const CAMERA_QUEUE: usize = 64;

/// Backfilled GOPs a forwarder has sent and not yet seen acknowledged (the
/// upstream allows a peer 8 open backfill streams).
pub const BACKFILL_IN_FLIGHT: usize = 3;

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
    /// Memory per forwarded camera for GOPs not yet recorded upstream, in MiB.
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

/// What every forwarder of one upstream shares.
#[derive(Debug)]
struct Shared {
    config: UpstreamConfig,
    addr: EndpointAddr,
    endpoint: Endpoint,
    hub: Arc<Hub>,
    pace: Mutex<Pace>,
    ack_through: bool,
}

impl Upstreams {
    /// Starts every forwarder; they stop when `cancel` fires. With
    /// `ack_through` (relay-only mode) the upstream's acknowledgements are
    /// passed on to the cameras.
    pub fn start(
        self,
        endpoint: Endpoint,
        hub: Arc<Hub>,
        allowlist: Arc<Allowlist>,
        ack_through: bool,
        cancel: CancellationToken,
    ) -> anyhow::Result<JoinSet<()>> {
        let mut tasks = JoinSet::new();
        for (config, rx) in self.feeds {
            let addr = config.dial_addr()?;
            tracing::info!(upstream = %addr.id, cameras = ?config.cameras, live = config.live, recordings = config.recordings, max_kbps = config.max_kbps, "forwarding to an upstream server");
            let shared = Arc::new(Shared {
                pace: Mutex::new(Pace::new(config.max_kbps, Instant::now())),
                config,
                addr,
                endpoint: endpoint.clone(),
                hub: hub.clone(),
                ack_through,
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
            FeedEvent::Aux { .. } | FeedEvent::CameraOffline { .. } => continue,
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
            if shared.config.recordings && tx.try_send(gop).is_err() {
                tracing::warn!(%camera, upstream = %shared.addr.id, "forwarder is behind; a GOP will be missing upstream");
            }
        }
    }
    cancel.cancel();
    while forwarders.join_next().await.is_some() {}
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
    let mut control = ControlStream::open(&conn)
        .await
        .map_err(|e| DialError::Connect(e.to_string()))?;
    let mut handshake = ClientHandshake::relay(*status.id.as_bytes(), status.info.clone());
    control
        .send(handshake.hello())
        .await
        .map_err(|e| DialError::Connect(e.to_string()))?;
    let reply = control
        .recv_timeout(CONNECT_TIMEOUT)
        .await
        .map_err(|e| DialError::Connect(format!("no welcome: {e}")))?;
    match handshake.handle(reply) {
        Ok(_) => Ok((conn, control)),
        Err(e @ kodama_proto::HandshakeError::Rejected { .. }) => {
            Err(DialError::Refused(e.to_string()))
        }
        Err(e) => Err(DialError::Connect(e.to_string())),
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
    let buffer = if shared.config.recordings {
        shared.config.buffer_mb as usize * 1024 * 1024
    } else {
        0
    };
    let mut pending = Pending::new(buffer);
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
                    Some((g, source)) => pending.push(g, source, Instant::now()),
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
                wait_taking(&mut gops, &mut pending, backoff, &cancel).await;
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!(%camera, %upstream, "cannot reach the upstream: {e}");
                wait_taking(&mut gops, &mut pending, backoff, &cancel).await;
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
        let before = pending.stats();
        tracing::info!(%camera, %upstream, name = %track.current_status().info.name, waiting_gops = before.gops, "forwarding the camera upstream");
        pending.connected();
        let stop = session(
            &shared,
            &track,
            conn,
            control,
            &mut gops,
            &mut pending,
            &cancel,
        )
        .await;
        pending.disconnected(Instant::now());
        if stop {
            return;
        }
        let s = pending.stats();
        tracing::warn!(%camera, %upstream, waiting_gops = s.gops, waiting_bytes = s.bytes, "link to the upstream lost; keeping what it has not recorded");
    }
}

/// Waits `d`, taking completed GOPs in.
async fn wait_taking(
    gops: &mut mpsc::Receiver<(Arc<Group>, Source)>,
    pending: &mut Pending,
    d: Duration,
    cancel: &CancellationToken,
) {
    let until = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(until) => return,
            g = gops.recv() => match g {
                Some((g, source)) => pending.push(g, source, Instant::now()),
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
}

/// One connection's life; true when the forwarder must stop.
async fn session(
    shared: &Shared,
    track: &Arc<CameraTrack>,
    conn: Connection,
    control: ControlStream,
    gops: &mut mpsc::Receiver<(Arc<Group>, Source)>,
    pending: &mut Pending,
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
    let mut backfills: JoinSet<(u64, bool)> = JoinSet::new();
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
                    hand_over(shared, &mut current, &mut media, pending, now, &mut wake);
                    frames_rx = Some(newest.subscribe().0);
                    current = Some(LiveCursor {
                        group: newest,
                        next: 0,
                        keyframe_us: None,
                    });
                }
            }
            if let Some(rx) = &mut frames_rx {
                rx.borrow_and_update();
            }
            hand_over(shared, &mut current, &mut media, pending, now, &mut wake);
        }
        while pending.in_flight(now) < BACKFILL_IN_FLIGHT {
            let Some((id, group)) = pending.next_due(now) else {
                break;
            };
            let bytes = group.payload_bytes();
            let paced = shared
                .pace
                .lock()
                .map(|mut p| p.take_backfill(bytes, now))
                .unwrap_or(true);
            if !paced {
                pending.send_failed(id, now);
                let retry = now + Duration::from_millis(50);
                wake = Some(wake.map_or(retry, |w| w.min(retry)));
                break;
            }
            backfill_bytes += bytes as u64;
            let conn = conn.clone();
            backfills.spawn(async move {
                let sent =
                    kodama_net::backfill::send_backfill_group(&conn, id, &group.frames).await;
                (id, sent.is_ok())
            });
        }
        if let Some(due) = pending.next_deadline() {
            wake = Some(wake.map_or(due, |w| w.min(due)));
        }
        if last_log.elapsed() >= PROGRESS_LOG_EVERY {
            last_log = Instant::now();
            let s = pending.stats();
            tracing::info!(%camera, %upstream, waiting_gops = s.gops, acknowledged = s.acknowledged, evicted = s.evicted, backfill_bytes, "forwarding");
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
                Some((g, source)) => pending.push(g, source, Instant::now()),
                None => return true,
            },
            Some(done) = backfills.join_next(), if !backfills.is_empty() => {
                if let Ok((id, false)) = done {
                    pending.send_failed(id, Instant::now());
                }
            }
            m = ctl_rx.recv() => match m {
                Ok(Message::Stored(stored)) => {
                    let left = match stored {
                        Stored::LiveThrough { capture_us } => pending.live_acknowledged(capture_us).map(|s| (capture_us, s)),
                        Stored::Backfill { id } => pending.backfill_acknowledged(id).map(|s| (id, s)),
                    };
                    if let (true, Some((capture_us, source))) = (shared.ack_through, left) {
                        let ack = match source {
                            Source::Live => Stored::LiveThrough { capture_us },
                            Source::CameraBackfill(id) => Stored::Backfill { id },
                        };
                        shared.hub.acks().send(camera, ack);
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
    pending: &mut Pending,
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
        media.send(frame);
        c.next += 1;
        pending.live_sent(keyframe_us, c.next);
    }
}
