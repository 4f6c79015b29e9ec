//! The camera's connection to its server: connect, handshake, stream, and
//! reconnect with capped exponential backoff when the server goes away.
//!
//! Channels (all bounded):
//! * `frames` (in): video frames from the capture thread ([`crate::video::spawn_capture`]).
//! * `aux` (in): telemetry and event JSON from the sampler and motion
//!   detector, Opus packets from the microphone thread.
//! * `control` (out): keyframe / bitrate requests to the capture thread.
//! * `state` (out, `watch`): the link state, for telemetry and the status LED.
//!
//! While disconnected the uplink keeps draining `frames` (remembering the
//! latest SPS/PPS), so the capture thread never stalls, and after a reconnect
//! it asks for a keyframe: the server sees a clean GOP at once. With a
//! backlog ([`StoreForward`]) every frame also passes through it: GOPs filmed
//! while disconnected (or sent live but not confirmed recorded when the link
//! dropped) go to the ring, and each session runs a backfill uploader
//! ([`crate::backlog::upload`]) that the server's `Stored` messages drive.
//! Audio packets pass through it too, online or not (numbered on one
//! sequence for the camera's run), and are kept with their GOP.
//!
//! Adaptive bitrate ([`Abr`], `video.abr`): every [`ABR_SAMPLE`] the session
//! reads the selected path's statistics (RTT, cwnd, losses, congestion
//! events, BBR's bandwidth estimate) and the media sender's own queue and
//! dropped groups into the sans-IO [`RateController`]; its tier decisions
//! go to the capture thread as [`VideoControl::Tier`] (the source forces a
//! keyframe, so a new tier starts a clean GOP). The server may cap or pin
//! the tier (`Command::SetTier`); the camera acknowledges once the first
//! keyframe of the resulting tier has left the encoder, with what the
//! encoder actually runs. [`StreamStatus`] (`stream` channel, `watch`)
//! tells telemetry the tier, the estimate and the uplink in use.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kodama_media::h264;
use kodama_net::control::ControlStream;
use kodama_net::error::HelloError;
use kodama_net::link::{self, LinkProfile};
use kodama_net::media_send::{MediaSender, SendOutcome};
use kodama_net::{codes, Endpoint, EndpointAddr};
use kodama_proto::{
    CameraInfo, Channel, ClientHandshake, Codec, Command, CommandResult, Frame, FrameFlags,
    Message, RejectCode, Stored, ALPN_CAMERA,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use kodama_net::policy::rate::{Decision, Limit, RateConfig, RateController, Rung, LADDER};
use kodama_proto::TierLimit;
use serde::{Deserialize, Serialize};

use crate::backlog::{upload, StoreForward, DRAIN_ON_STOP};
use crate::backoff::Backoff;
use crate::link::LinkSet;
use crate::update::{UpdateStatus, Updater};
use crate::video::{TierState, VideoControl, VideoFormat};

/// How often adaptive bitrate reads the path's statistics (the controller's
/// windows — 500 ms to step down, seconds to probe up — are multiples).
pub const ABR_SAMPLE: Duration = Duration::from_millis(200);

/// Silence after the hello that means the server is gone: a live server
/// acknowledges the hello within a round trip (QUIC retransmits a lost one
/// within a few), so this is several cellular round trips.
const HELLO_SILENCE: Duration = Duration::from_millis(1500);

/// What the camera streams and how, for telemetry (`stream` in each sample).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamStatus {
    /// The uplink carrying video (`network.uplinks` name), if failover is on
    /// and a session is up.
    pub uplink: Option<String>,
    /// The adaptive-bitrate tier (`None`: `video.abr` is off).
    pub tier: Option<String>,
    /// The encoder's target bitrate, kbit/s.
    pub kbps: u32,
    /// The congestion controller's bandwidth estimate, kbit/s (BBR only).
    pub estimate_kbps: Option<u64>,
    /// Smoothed RTT of the path in use, ms.
    pub rtt_ms: Option<u64>,
    /// The server's limit: `auto`, `cap NAME` or `pin NAME`.
    pub limit: String,
}

/// Adaptive bitrate across sessions: the controller (the tier survives a
/// reconnect or a failover) and what it tells telemetry.
#[derive(Debug)]
pub struct Abr {
    controller: RateController,
    origin: tokio::time::Instant,
}

impl Abr {
    /// A controller over the ladder's rungs up to the one `ceiling_kbps`
    /// reaches (`video.bitrate_kbps`: the camera never sends more than its
    /// owner configured), starting at that rung.
    pub fn new(ceiling_kbps: u32) -> Self {
        let ladder = ladder_below(ceiling_kbps);
        let top = ladder.len() - 1;
        Self {
            controller: RateController::new(RateConfig::default(), &ladder, top),
            origin: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The rung being sent.
    pub fn rung(&self) -> Rung {
        self.controller.ladder()[self.controller.current()]
    }

    fn limit_text(&self) -> String {
        let name = |n: usize| {
            let l = self.controller.ladder();
            l[n.min(l.len() - 1)].name
        };
        match self.controller.limit() {
            Limit::Auto => "auto".into(),
            Limit::Max(n) => format!("cap {}", name(n)),
            Limit::Pin(n) => format!("pin {}", name(n)),
        }
    }

    /// Applies the server's limit: the decision it forces (if any) and a
    /// note for the acknowledgement, or why it cannot be applied.
    fn set_limit(&mut self, limit: TierLimit) -> Result<(Option<Decision>, String), String> {
        let ladder_text = || {
            LADDER
                .iter()
                .enumerate()
                .map(|(i, r)| format!("{i}={}", r.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let own_top = self.controller.ladder().len() - 1;
        let rung = |r: u8| -> Result<(usize, String), String> {
            let r = usize::from(r);
            if r >= LADDER.len() {
                return Err(format!("no rung {r}; the ladder is {}", ladder_text()));
            }
            let note = if r > own_top {
                format!(
                    "; {} is above this camera's ceiling {} (video.bitrate_kbps)",
                    LADDER[r].name, LADDER[own_top].name
                )
            } else {
                String::new()
            };
            Ok((r.min(own_top), note))
        };
        let (limit, note) = match limit {
            TierLimit::Auto => (Limit::Auto, String::new()),
            TierLimit::Cap(r) => {
                let (r, note) = rung(r)?;
                (Limit::Max(r), note)
            }
            TierLimit::Pin(r) => {
                let (r, note) = rung(r)?;
                (Limit::Pin(r), note)
            }
        };
        let now = self.now();
        Ok((self.controller.set_limit(limit, now), note))
    }
}

/// The rungs of [`LADDER`] at or below `ceiling_kbps`. A ceiling below the
/// lowest rung (a metered link whose owner allows, say, 300 kbit/s) is
/// honoured, not rounded up: the ladder is that one rung at the ceiling's
/// bitrate, so adaptive bitrate has nowhere to go but the encoder never
/// sends more than configured.
fn ladder_below(ceiling_kbps: u32) -> Vec<Rung> {
    let fitting: Vec<Rung> = LADDER
        .iter()
        .copied()
        .filter(|r| r.kbps <= ceiling_kbps)
        .collect();
    if fitting.is_empty() {
        vec![Rung {
            kbps: ceiling_kbps,
            ..LADDER[0]
        }]
    } else {
        fitting
    }
}

/// Sends the rung `tier` to the capture thread.
fn request_tier(control: &mpsc::Sender<VideoControl>, rung: &Rung) -> Result<(), String> {
    control
        .try_send(VideoControl::Tier(rung.into()))
        .map_err(|e| format!("capture busy: {e}"))
}

/// A telemetry or event document, or an audio packet, for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxMessage {
    /// [`Channel::Telemetry`], [`Channel::Event`] or [`Channel::Audio`] (one Opus packet).
    pub channel: Channel,
    /// When it was measured, µs since the Unix epoch.
    pub capture_us: u64,
    /// JSON document.
    pub payload: Bytes,
}

/// Where the uplink is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Trying to reach the server.
    Connecting {
        /// Attempts since the last good session.
        attempt: u32,
    },
    /// Streaming.
    Streaming,
    /// The server refused us; retrying after backoff.
    Refused {
        /// What the server said.
        reason: String,
    },
    /// Stopped.
    Stopped,
}

/// What the uplink needs to know.
#[derive(Debug, Clone)]
pub struct UplinkOptions {
    /// The server to dial.
    pub server: EndpointAddr,
    /// The camera's name.
    pub name: String,
    /// The source's format.
    pub format: VideoFormat,
    /// The starting bitrate.
    pub bitrate_kbps: u32,
    /// Reconnect backoff bounds.
    pub backoff_initial: Duration,
    /// Reconnect backoff cap.
    pub backoff_max: Duration,
    /// Program and arguments that reboot the camera (`system.reboot_command`);
    /// empty: a reboot command is answered "unsupported".
    pub reboot_command: Vec<String>,
    /// Failover between uplinks (`network.uplinks`): sessions run on the
    /// active uplink's warm connection instead of dialling from `endpoint`.
    pub links: Option<Arc<LinkSet>>,
    /// The audio stream announced in the hello (its packets arrive on
    /// `aux` as [`Channel::Audio`]); `None`: no microphone.
    pub audio: Option<kodama_proto::AudioInfo>,
    /// Adaptive bitrate (`video.abr`).
    pub abr: bool,
    /// The congestion controller of a connection the uplink dials itself
    /// (without failover; `network.congestion`).
    pub congestion: link::Congestion,
}

/// Inputs and outputs of the uplink task.
#[derive(Debug)]
pub struct UplinkIo {
    /// Video frames from the capture thread.
    pub frames: mpsc::Receiver<Arc<Frame>>,
    /// Telemetry and events.
    pub aux: mpsc::Receiver<AuxMessage>,
    /// Requests to the capture thread.
    pub control: mpsc::Sender<VideoControl>,
    /// Link state for others to watch.
    pub state: watch::Sender<LinkState>,
    /// Store-and-forward, if the camera keeps a backlog.
    pub store: Option<StoreForward>,
    /// What the capture thread did with the latest tier request.
    pub tier: watch::Receiver<TierState>,
    /// Tier, estimate and uplink, for telemetry.
    pub status: watch::Sender<StreamStatus>,
    /// The updater, if this camera takes firmware updates.
    pub updates: Option<Updater>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a keyframe or snapshot command may wait for its keyframe.
pub const KEYFRAME_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the reboot command may take to say it has started.
const REBOOT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A keyframe, snapshot or tier command waiting for the keyframe that
/// answers it.
#[derive(Debug)]
struct AwaitingKeyframe {
    id: u32,
    what: Awaited,
    after_sequence: Option<u64>,
    deadline: tokio::time::Instant,
}

#[derive(Debug, Clone)]
enum Awaited {
    Keyframe,
    Snapshot,
    /// The first keyframe of this rung; the note goes into the answer.
    Tier {
        rung: &'static str,
        note: String,
    },
}
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Parameter sets seen most recently, for the hello.
#[derive(Debug, Default, Clone)]
struct ParamSets {
    sps: Bytes,
    pps: Bytes,
}

impl ParamSets {
    fn observe(&mut self, frame: &Frame) {
        if !frame.is_keyframe() {
            return;
        }
        let (sps, pps) = h264::parameter_sets(&frame.payload);
        if let (Some(s), Some(p)) = (sps, pps) {
            self.sps = Bytes::copy_from_slice(s);
            self.pps = Bytes::copy_from_slice(p);
        }
    }
}

/// Why a session ended.
enum SessionEnd {
    /// Cancelled: stop for good.
    Cancelled,
    /// The capture side is gone: stop for good.
    SourceGone,
    /// Refused by the server.
    Refused(String),
    /// Lost or failed; the bool tells whether it had been streaming.
    Lost(String, bool),
    /// Failover moved the camera to another uplink: start over there at once.
    Moved(String),
}

/// Runs until `cancel` fires or the capture thread ends.
pub async fn run(
    endpoint: Endpoint,
    opts: UplinkOptions,
    mut io: UplinkIo,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max);
    let mut params = ParamSets::default();
    let mut aux_seq = [0u64; 4];
    let mut aux_open = true;
    let mut attempt = 0u32;
    let mut abr = opts.abr.then(|| Abr::new(opts.bitrate_kbps));
    if let Some(a) = &abr {
        let rung = a.rung();
        if let Err(e) = request_tier(&io.control, &rung) {
            tracing::warn!("cannot set the starting tier: {e}");
        }
        let limit = a.limit_text();
        io.status.send_modify(|s| {
            s.tier = Some(rung.name.into());
            s.kbps = rung.kbps;
            s.limit = limit;
        });
    } else {
        io.status.send_modify(|s| {
            s.kbps = opts.bitrate_kbps;
            s.limit = "fixed (video.abr = false)".into();
        });
    }
    loop {
        attempt += 1;
        let _ = io.state.send(LinkState::Connecting { attempt });
        let end = session(
            &endpoint,
            &opts,
            &mut io,
            &mut params,
            &mut aux_seq,
            &mut aux_open,
            abr.as_mut(),
            &cancel,
        )
        .await;
        io.status.send_modify(|s| {
            s.uplink = None;
            s.rtt_ms = None;
        });
        let delay = match end {
            SessionEnd::Cancelled | SessionEnd::SourceGone => break,
            SessionEnd::Refused(reason) => {
                tracing::error!("server refused this camera: {reason}");
                let _ = io.state.send(LinkState::Refused { reason });
                backoff.next_delay(rand::random::<f64>())
            }
            SessionEnd::Lost(reason, was_streaming) => {
                if was_streaming {
                    backoff.reset();
                    attempt = 0;
                }
                // With failover the next session waits for whichever
                // uplink's warm connection the decider picks: no backoff.
                if opts.links.is_some() && was_streaming {
                    tracing::warn!("server link lost ({reason}); failing over");
                    continue;
                }
                let d = backoff.next_delay(rand::random::<f64>());
                tracing::warn!("server link lost ({reason}); reconnecting in {d:?}");
                d
            }
            SessionEnd::Moved(reason) => {
                tracing::info!("{reason}");
                backoff.reset();
                attempt = 0;
                continue;
            }
        };
        // Keep draining frames while we wait, so capture never stalls.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        while !cancel.is_cancelled() && !io.frames.is_closed() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = &mut sleep => break,
                f = io.frames.recv() => match f {
                    Some(f) => {
                        params.observe(&f);
                        if let Some(s) = io.store.as_mut() {
                            s.on_frame(f).await;
                        }
                    }
                    None => break,
                },
                a = io.aux.recv(), if aux_open => aux_offline(a, &mut aux_seq, &mut aux_open, io.store.as_mut()),
            }
        }
        if cancel.is_cancelled() || io.frames.is_closed() {
            break;
        }
    }
    if let Some(mut store) = io.store.take() {
        // Whatever is still on its way from the capture thread is kept:
        // a restart (or a reboot) must not lose the last second.
        store.set_online(false).await;
        let deadline = tokio::time::Instant::now() + DRAIN_ON_STOP;
        while let Ok(Some(f)) = tokio::time::timeout_at(deadline, io.frames.recv()).await {
            store.on_frame(f).await;
        }
        // The audio already queued goes with the last GOP (bounded: the
        // microphone thread stops with the same cancellation).
        for _ in 0..1024 {
            let Ok(a) = io.aux.try_recv() else { break };
            aux_offline(Some(a), &mut aux_seq, &mut aux_open, Some(&mut store));
        }
        store.flush().await;
    }
    let _ = io.state.send(LinkState::Stopped);
}

/// Numbers an aux message on its channel's sequence (one counter per
/// channel for the camera's whole run, online or not) as a frame.
fn aux_frame(a: AuxMessage, aux_seq: &mut [u64; 4]) -> Arc<Frame> {
    let slot = &mut aux_seq[a.channel as usize % aux_seq.len()];
    *slot += 1;
    Arc::new(Frame {
        channel: a.channel,
        flags: FrameFlags::empty(),
        capture_us: a.capture_us,
        sequence: *slot,
        payload: a.payload,
    })
}

/// An aux message while no session streams: an audio packet goes to the
/// backlog (kept with its GOP); telemetry and events are dropped. `None`:
/// the channel closed, never to be polled again.
fn aux_offline(
    a: Option<AuxMessage>,
    aux_seq: &mut [u64; 4],
    aux_open: &mut bool,
    store: Option<&mut StoreForward>,
) {
    let Some(a) = a else {
        *aux_open = false;
        return;
    };
    if let (Channel::Audio, Some(store)) = (a.channel, store) {
        store.on_audio(aux_frame(a, aux_seq));
    }
}

// One session's state is borrowed from the uplink loop that outlives it
// (parameter sets, aux sequence numbers, the rate controller); bundling them
// into a struct only to pass it here would hide which the session changes.
#[allow(clippy::too_many_arguments)]
async fn session(
    endpoint: &Endpoint,
    opts: &UplinkOptions,
    io: &mut UplinkIo,
    params: &mut ParamSets,
    aux_seq: &mut [u64; 4],
    aux_open: &mut bool,
    mut abr: Option<&mut Abr>,
    cancel: &CancellationToken,
) -> SessionEnd {
    // The hello carries SPS/PPS: wait for a keyframe if we have none yet.
    if params.sps.is_empty() {
        let _ = io.control.try_send(VideoControl::Keyframe);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return SessionEnd::Cancelled,
                f = io.frames.recv() => match f {
                    Some(f) => {
                        params.observe(&f);
                        if let Some(s) = io.store.as_mut() {
                            s.on_frame(f).await;
                        }
                        if !params.sps.is_empty() { break; }
                    }
                    None => return SessionEnd::SourceGone,
                },
            }
        }
    }
    // Connecting can take seconds (a silent server): keep draining frames
    // meanwhile, so capture never stalls and the backlog misses nothing.
    // The image's version when it has one (what an update changes).
    let firmware = io
        .updates
        .as_ref()
        .map_or_else(|| env!("CARGO_PKG_VERSION").to_owned(), Updater::version);
    let connecting = connect(endpoint, opts, params.clone(), firmware);
    tokio::pin!(connecting);
    let (conn, control, uplink) = loop {
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            r = &mut connecting => match r {
                Ok(c) => break c,
                Err(end) => return end,
            },
            f = io.frames.recv() => match f {
                Some(f) => {
                    params.observe(&f);
                    if let Some(s) = io.store.as_mut() {
                        s.on_frame(f).await;
                    }
                }
                None => return SessionEnd::SourceGone,
            },
            a = io.aux.recv(), if *aux_open => aux_offline(a, aux_seq, aux_open, io.store.as_mut()),
        }
    };
    let _ = io.state.send(LinkState::Streaming);
    let _ = io.control.try_send(VideoControl::Keyframe);
    let uplink_name = match (&opts.links, uplink) {
        (Some(links), Some(i)) => Some(links.name(i).to_owned()),
        _ => None,
    };
    io.status.send_modify(|s| s.uplink = uplink_name);
    if let Some(a) = abr.as_deref_mut() {
        // Another connection, maybe another uplink: its own RTT floor.
        let now = a.now();
        a.controller.new_path(now);
    }
    let mut abr_tick = tokio::time::interval(ABR_SAMPLE);
    abr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let session_cancel = cancel.child_token();
    let mut media = MediaSender::new(conn.clone(), session_cancel.clone());
    let send_stats = media.stats();
    let (backfill_acks, acks_rx) = mpsc::channel(64);
    let uploader = match io.store.as_mut() {
        Some(store) => {
            store.set_online(true).await;
            Some(tokio::spawn(upload::run(
                conn.clone(),
                store.backlog().clone(),
                acks_rx,
                store.upload_options(),
                session_cancel.child_token(),
            )))
        }
        None => None,
    };
    let (mut ctl_rx, mut ctl_tx) = control.split();
    // The server learns after every connect where an update stands (it
    // may have happened across a reboot), and of every change after that.
    let mut update_status = io.updates.as_ref().map(Updater::status);
    if let Some(status) = update_status.as_mut() {
        let report = update_report(&status.borrow_and_update());
        if let Err(e) = ctl_tx.send(&report).await {
            tracing::warn!("cannot report the update status: {e}");
        }
    }
    let mut awaiting: Vec<AwaitingKeyframe> = Vec::new();
    let mut last_sequence: Option<u64> = None;
    // A crashed server or a black-holed path announces nothing: notice the
    // silence within a second instead of waiting for the idle timeout.
    let silent = link::until_silent(&conn, link::SILENCE);
    tokio::pin!(silent);
    // Failover may move the session to a better uplink.
    let moved = async {
        match (&opts.links, uplink) {
            (Some(links), Some(from)) => {
                let to = links.moved_from(from).await;
                format!(
                    "moving from uplink {} to {}",
                    links.name(from),
                    to.map_or("none", |t| links.name(t))
                )
            }
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(moved);
    let end = loop {
        let next_deadline = awaiting.iter().map(|a| a.deadline).min();
        tokio::select! {
            _ = cancel.cancelled() => {
                break SessionEnd::Cancelled;
            }
            reason = conn.closed() => break SessionEnd::Lost(reason.to_string(), true),
            _ = async {
                match next_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                let (late, keep): (Vec<_>, Vec<_>) = awaiting.drain(..).partition(|a| a.deadline <= now);
                awaiting = keep;
                for a in late {
                    let detail = match &a.what {
                        Awaited::Tier { rung, .. } => format!("no keyframe of tier {rung} came out of the encoder within {KEYFRAME_ACK_TIMEOUT:?}"),
                        _ => format!("no keyframe came out of the encoder within {KEYFRAME_ACK_TIMEOUT:?}"),
                    };
                    let ack = Message::CommandAck {
                        id: a.id,
                        result: CommandResult::Failed,
                        detail,
                    };
                    if let Err(e) = ctl_tx.send(&ack).await {
                        tracing::warn!("cannot acknowledge command {}: {e}", a.id);
                    }
                }
            }
            quiet = &mut silent => {
                conn.close(codes::NORMAL, b"server silent");
                break SessionEnd::Lost(format!("nothing from the server for {quiet:?}"), true);
            }
            why = &mut moved => break SessionEnd::Moved(why),
            _ = abr_tick.tick(), if abr.is_some() => {
                let Some(a) = abr.as_deref_mut() else { continue };
                let now = a.now();
                let queued = kodama_net::media_send::SendStats::get(&send_stats.video_bytes_queued);
                let handed = kodama_net::media_send::SendStats::get(&send_stats.bytes_sent);
                let Some(sample) = link::path_sample(&conn, now, queued, send_stats.groups_dropped(), handed) else { continue };
                tracing::debug!(?sample, "adaptive bitrate: sample");
                if let Some(d) = a.controller.on_sample(&sample) {
                    let rung = a.controller.ladder()[d.tier];
                    tracing::info!(tier = rung.name, kbps = rung.kbps, reason = ?d.reason, estimate_kbps = ?sample.bandwidth_bps.map(|b| b / 1000), rtt_ms = sample.rtt.as_millis() as u64, "adaptive bitrate: tier change");
                    if let Err(e) = request_tier(&io.control, &rung) {
                        tracing::warn!("cannot change the tier: {e}");
                    }
                }
                let rung = a.rung();
                let estimate = a.controller.estimate_bps().map(|b| b / 1000);
                io.status.send_if_modified(|s| {
                    let next = StreamStatus {
                        tier: Some(rung.name.into()),
                        kbps: rung.kbps,
                        estimate_kbps: estimate,
                        rtt_ms: Some(sample.rtt.as_millis() as u64),
                        ..s.clone()
                    };
                    let changed = *s != next;
                    *s = next;
                    changed
                });
            }
            f = io.frames.recv() => {
                let Some(f) = f else { break SessionEnd::SourceGone };
                params.observe(&f);
                if let Some(s) = io.store.as_mut() {
                    s.on_frame(f.clone()).await;
                }
                let (sequence, keyframe, capture_us) = (f.sequence, f.is_keyframe(), f.capture_us);
                let sent = media.send(f);
                if let Some(s) = io.store.as_mut() {
                    // Whatever live sending did not deliver whole goes to
                    // the backlog: a dropped frame keeps the GOP being
                    // captured, a superseded group the GOP it carried.
                    if sent != SendOutcome::Queued {
                        s.live_lost();
                    }
                    for capture_us in media.take_incomplete() {
                        s.live_incomplete(capture_us).await;
                    }
                }
                if sent == SendOutcome::GroupAbandoned {
                    let _ = io.control.try_send(VideoControl::Keyframe);
                }
                if keyframe && !awaiting.is_empty() {
                    let answered = io.tier.borrow().clone();
                    let (done, keep): (Vec<_>, Vec<_>) = awaiting
                        .drain(..)
                        .partition(|a| a.after_sequence.is_none_or(|s| sequence > s) && match &a.what {
                            Awaited::Tier { rung, .. } => tier_answered(&answered, rung),
                            _ => true,
                        });
                    awaiting = keep;
                    for a in done {
                        let (result, detail) = match &a.what {
                            Awaited::Keyframe => (CommandResult::Ok, format!("keyframe seq={sequence} capture_us={capture_us}")),
                            Awaited::Snapshot => (CommandResult::Ok, format!("snapshot seq={sequence} capture_us={capture_us}")),
                            Awaited::Tier { note, .. } => tier_answer(&io.tier.borrow(), note, sequence),
                        };
                        let ack = Message::CommandAck {
                            id: a.id,
                            result,
                            detail,
                        };
                        if let Err(e) = ctl_tx.send(&ack).await {
                            tracing::warn!("cannot acknowledge command {}: {e}", a.id);
                        }
                    }
                }
                last_sequence = Some(sequence);
            }
            a = io.aux.recv(), if *aux_open => {
                // A closed aux channel (no sampler) must not be polled again:
                // it would be ready forever and spin this loop.
                let Some(a) = a else { *aux_open = false; continue };
                let frame = aux_frame(a, aux_seq);
                if frame.channel == Channel::Audio {
                    // Kept with its GOP if that GOP must be.
                    if let Some(s) = io.store.as_mut() {
                        s.on_audio(frame.clone());
                    }
                }
                media.send(frame);
            }
            changed = async {
                match update_status.as_mut() {
                    Some(s) => s.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    update_status = None;
                    continue;
                }
                let report = update_status.as_mut().map(|s| update_report(&s.borrow_and_update()));
                if let Some(report) = report {
                    if let Err(e) = ctl_tx.send(&report).await {
                        break SessionEnd::Lost(format!("control: {e}"), true);
                    }
                }
            }
            // Only the server opens unidirectional streams to a camera, and
            // only to deliver an update bundle.
            accepted = kodama_net::update::accept(&conn), if io.updates.is_some() => match accepted {
                Ok(recv) => {
                    if let Some(u) = &io.updates {
                        if !u.stream(recv) {
                            tracing::warn!("updater busy; bundle stream dropped");
                        }
                    }
                }
                Err(e) => break SessionEnd::Lost(format!("accepting a stream: {e}"), true),
            },
            msg = ctl_rx.recv() => match msg {
                Ok(Message::UpdateOffer { hash, size }) => {
                    tracing::info!(size, "the server offers a firmware update");
                    let taken = io.updates.as_ref().is_some_and(|u| u.offer(hash, size));
                    if !taken {
                        let report = Message::UpdateReport {
                            hash,
                            phase: kodama_proto::UpdatePhase::Failed,
                            progress: 0,
                            detail: if io.updates.is_some() {
                                "the updater is busy; offer again later".into()
                            } else {
                                "this camera does not take updates".into()
                            },
                        };
                        if let Err(e) = ctl_tx.send(&report).await {
                            break SessionEnd::Lost(format!("control: {e}"), true);
                        }
                    }
                }
                Ok(Message::Command { id, command }) => {
                    tracing::info!(id, ?command, "command from the server");
                    let answer = match command {
                        Command::RequestKeyframe | Command::Snapshot => {
                            match apply_command(Command::RequestKeyframe, &io.control) {
                                (CommandResult::Ok, _) => {
                                    awaiting.push(AwaitingKeyframe {
                                        id,
                                        what: if command == Command::Snapshot { Awaited::Snapshot } else { Awaited::Keyframe },
                                        after_sequence: last_sequence,
                                        deadline: tokio::time::Instant::now() + KEYFRAME_ACK_TIMEOUT,
                                    });
                                    None
                                }
                                failed => Some(failed),
                            }
                        }
                        Command::SetTier(limit) => match abr.as_deref_mut() {
                            None => Some((CommandResult::Unsupported, "adaptive bitrate is off on this camera (video.abr = false)".to_owned())),
                            Some(a) => match a.set_limit(limit) {
                                Err(why) => Some((CommandResult::Failed, why)),
                                Ok((decision, note)) => {
                                    let limit_text = a.limit_text();
                                    let rung = a.rung();
                                    io.status.send_modify(|s| {
                                        s.limit = limit_text.clone();
                                        s.tier = Some(rung.name.into());
                                        s.kbps = rung.kbps;
                                    });
                                    let note = format!("{limit_text}{note}");
                                    match decision {
                                        None => Some((CommandResult::Ok, format!("{note}: staying at {} ({} kbit/s)", rung.name, rung.kbps))),
                                        Some(_) => match request_tier(&io.control, &rung) {
                                            Err(e) => Some((CommandResult::Failed, e)),
                                            Ok(()) => {
                                                awaiting.push(AwaitingKeyframe {
                                                    id,
                                                    what: Awaited::Tier { rung: rung.name, note },
                                                    after_sequence: last_sequence,
                                                    deadline: tokio::time::Instant::now() + KEYFRAME_ACK_TIMEOUT,
                                                });
                                                None
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        Command::Reboot => Some(start_reboot(&opts.reboot_command).await),
                        other => Some(apply_command(other, &io.control)),
                    };
                    if let Some((result, detail)) = answer {
                        tracing::info!(id, ?result, %detail, "command answered");
                        let ack = Message::CommandAck { id, result, detail };
                        if let Err(e) = ctl_tx.send(&ack).await {
                            break SessionEnd::Lost(format!("control: {e}"), true);
                        }
                    }
                }
                Ok(Message::Stored(Stored::LiveThrough { capture_us })) => {
                    if let Some(s) = io.store.as_mut() {
                        s.confirmed(capture_us);
                    }
                }
                Ok(Message::Stored(Stored::Backfill { id })) => {
                    // Full means the uploader is gone or far behind; the
                    // record is sent again and the server skips it.
                    let _ = backfill_acks.try_send(id);
                }
                Ok(other) => tracing::debug!("ignoring control message {other:?}"),
                Err(e) => break SessionEnd::Lost(format!("control: {e}"), true),
            },
        }
    };
    if matches!(end, SessionEnd::Cancelled | SessionEnd::SourceGone) {
        ctl_tx.finish();
        // Hand what is queued to QUIC, then close politely.
        let _ = tokio::time::timeout(Duration::from_secs(2), media.finish()).await;
        conn.close(codes::NORMAL, b"camera stopping");
    }
    session_cancel.cancel();
    if let Some(task) = uploader {
        let _ = task.await;
    }
    if let Some(s) = io.store.as_mut() {
        s.set_online(false).await;
    }
    end
}

/// Dials the server and says hello; the error is how the session ended.
async fn connect(
    endpoint: &Endpoint,
    opts: &UplinkOptions,
    params: ParamSets,
    firmware: String,
) -> Result<(kodama_net::Connection, ControlStream, Option<usize>), SessionEnd> {
    let (conn, uplink) = match &opts.links {
        // Failover: the active uplink's connection is already up (warm).
        Some(links) => match links.connection(CONNECT_TIMEOUT).await {
            Some(r) => {
                tracing::info!(uplink = links.name(r.uplink), "streaming over uplink");
                (r.conn, Some(r.uplink))
            }
            None => {
                return Err(SessionEnd::Lost(
                    format!("no uplink reached the server within {CONNECT_TIMEOUT:?}"),
                    false,
                ))
            }
        },
        None => match tokio::time::timeout(
            CONNECT_TIMEOUT,
            link::connect_with(
                endpoint,
                opts.server.clone(),
                ALPN_CAMERA,
                LinkProfile::Live,
                opts.congestion,
            ),
        )
        .await
        {
            Ok(Ok(conn)) => (conn, None),
            Ok(Err(e)) => return Err(SessionEnd::Lost(format!("connect: {e}"), false)),
            Err(_) => {
                return Err(SessionEnd::Lost(
                    format!("connect: no answer within {CONNECT_TIMEOUT:?}"),
                    false,
                ))
            }
        },
    };
    let info = CameraInfo {
        name: opts.name.clone(),
        codec: Codec::H264,
        width: opts.format.width as u16,
        height: opts.format.height as u16,
        fps_milli: opts.format.fps * 1000,
        bitrate_kbps: opts.bitrate_kbps,
        sps: params.sps,
        pps: params.pps,
        firmware,
        audio: opts.audio,
    };
    let hello = ControlStream::hello(&conn, ClientHandshake::camera(info), HANDSHAKE_TIMEOUT);
    let answer = tokio::select! {
        r = hello => r,
        quiet = link::until_silent(&conn, HELLO_SILENCE) => {
            // Not even an acknowledgement: the server behind this connection
            // is gone (a warm standby's server dies with the active one's in
            // a crash or restart). Closing it makes the link keeper redial
            // that uplink and the next session take one that is up, instead
            // of waiting out the handshake timeout.
            conn.close(codes::NORMAL, b"silent");
            return Err(SessionEnd::Lost(
                format!("handshake: nothing from the server for {quiet:?} after the hello"),
                false,
            ));
        }
    };
    let control = match answer {
        Ok((control, server)) => {
            tracing::info!(%server, "connected; streaming");
            control
        }
        Err(HelloError::Handshake(kodama_proto::HandshakeError::Rejected { code, reason })) => {
            conn.close(codes::NORMAL, b"refused");
            let hint = if code == RejectCode::NotAllowed {
                format!(
                    " — pair it (on the server: kodama-server camera add NAME, then server.pair in kodama.toml) or allow it: kodama-server allow add {} --camera --label NAME",
                    endpoint.id()
                )
            } else {
                String::new()
            };
            return Err(SessionEnd::Refused(format!("{reason}{hint}")));
        }
        Err(HelloError::Handshake(e)) => {
            conn.close(codes::HANDSHAKE, e.to_string().as_bytes());
            return Err(SessionEnd::Refused(e.to_string()));
        }
        // A refusal before any Kodama byte (a key the server does not
        // allow) arrives as the connection's close reason.
        Err(e) => return Err(SessionEnd::Lost(e.to_string(), false)),
    };
    Ok((conn, control, uplink))
}

fn update_report(s: &UpdateStatus) -> Message {
    Message::UpdateReport {
        hash: s.hash,
        phase: s.phase,
        progress: s.progress,
        detail: s.detail.clone(),
    }
}

/// Hands a request to the capture thread. A keyframe is acknowledged later,
/// when it has come out of the encoder; a bitrate change when it is queued
/// for the encoder (it applies at the next GOP).
fn apply_command(
    command: Command,
    control: &mpsc::Sender<VideoControl>,
) -> (CommandResult, String) {
    let request = match command {
        Command::RequestKeyframe | Command::Snapshot => VideoControl::Keyframe,
        Command::SetBitrate { kbps } => VideoControl::Bitrate(kbps),
        Command::Reboot | Command::SetTier(_) => {
            return (
                CommandResult::Unsupported,
                "handled by the uplink itself".into(),
            )
        }
    };
    match control.try_send(request) {
        Ok(()) => (
            CommandResult::Ok,
            format!("handed to the encoder: {request:?}"),
        ),
        Err(e) => (CommandResult::Failed, format!("capture busy: {e}")),
    }
}

/// Whether the capture thread has answered the request for `rung`.
fn tier_answered(state: &TierState, rung: &str) -> bool {
    match state {
        TierState::Applied(a) => a.tier == rung,
        TierState::Failed { tier, .. } => *tier == rung,
        TierState::Initial => false,
    }
}

/// The acknowledgement of a tier command: what the encoder runs now.
fn tier_answer(state: &TierState, note: &str, sequence: u64) -> (CommandResult, String) {
    match state {
        TierState::Applied(a) => (
            CommandResult::Ok,
            format!(
                "{note}: now {} at {} kbit/s, {}x{} @ {} fps, from keyframe seq={sequence}",
                a.tier, a.kbps, a.format.width, a.format.height, a.format.fps
            ),
        ),
        TierState::Failed { tier, error } => (
            CommandResult::Failed,
            format!("{note}: the encoder refused {tier}: {error}"),
        ),
        TierState::Initial => (
            CommandResult::Failed,
            format!("{note}: the encoder has not answered"),
        ),
    }
}

/// Runs the configured reboot command and reports what happened.
async fn start_reboot(command: &[String]) -> (CommandResult, String) {
    let Some((program, args)) = command.split_first() else {
        return (
            CommandResult::Unsupported,
            "this camera has no reboot command (system.reboot_command)".into(),
        );
    };
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(REBOOT_COMMAND_TIMEOUT, run).await {
        Ok(Ok(status)) if status.success() => (
            CommandResult::Ok,
            format!("rebooting: `{}` {status}", command.join(" ")),
        ),
        Ok(Ok(status)) => (
            CommandResult::Failed,
            format!("`{}` failed: {status}", command.join(" ")),
        ),
        Ok(Err(e)) => (
            CommandResult::Failed,
            format!("cannot run `{program}`: {e}"),
        ),
        Err(_) => (
            CommandResult::Failed,
            format!("`{program}` did not finish within {REBOOT_COMMAND_TIMEOUT:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_sets_come_from_keyframes_only() {
        let mut p = ParamSets::default();
        let key = Frame {
            channel: Channel::Video,
            flags: FrameFlags::KEYFRAME,
            capture_us: 0,
            sequence: 0,
            payload: Bytes::from_static(&[
                0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3,
            ]),
        };
        let mut delta = key.clone();
        delta.flags = FrameFlags::empty();
        delta.payload = Bytes::from_static(&[0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x68, 9]);
        p.observe(&key);
        p.observe(&delta);
        assert_eq!(&p.sps[..], &[0x67, 1]);
        assert_eq!(&p.pps[..], &[0x68, 2]);
    }

    #[test]
    fn commands_reach_the_capture_thread() {
        let (tx, mut rx) = mpsc::channel(1);
        assert_eq!(
            apply_command(Command::SetBitrate { kbps: 900 }, &tx).0,
            CommandResult::Ok
        );
        assert_eq!(rx.try_recv().ok(), Some(VideoControl::Bitrate(900)));
        assert_eq!(
            apply_command(Command::RequestKeyframe, &tx).0,
            CommandResult::Ok
        );
        assert_eq!(
            apply_command(Command::RequestKeyframe, &tx).0,
            CommandResult::Failed
        );
    }

    #[test]
    fn abr_ceiling_below_the_lowest_rung_is_honoured() {
        let abr = Abr::new(300);
        assert_eq!(abr.rung().kbps, 300, "never above video.bitrate_kbps");
        assert_eq!(abr.rung().name, "360p15");
        assert_eq!(abr.controller.ladder().len(), 1);
        assert_eq!(Abr::new(500).rung().kbps, 500);
        assert_eq!(Abr::new(4000).controller.ladder().len(), LADDER.len());
    }

    #[test]
    fn abr_ladder_stops_at_the_configured_bitrate_and_limits_say_what_they_did() {
        let mut abr = Abr::new(1500);
        assert_eq!(abr.rung().name, "480p15", "1500 kbit/s reaches rung 1");
        assert!(abr.set_limit(TierLimit::Pin(9)).is_err(), "no rung 9");
        let (d, note) = abr.set_limit(TierLimit::Cap(3)).expect("cap");
        assert_eq!(d, None);
        assert!(note.contains("above this camera's ceiling"), "{note}");
        let (d, _) = abr.set_limit(TierLimit::Pin(0)).expect("pin");
        assert_eq!(d.map(|d| d.tier), Some(0));
        assert_eq!(abr.limit_text(), "pin 360p15");
        let applied = TierState::Applied(crate::video::Applied {
            tier: "360p15",
            kbps: 500,
            format: VideoFormat {
                width: 320,
                height: 240,
                fps: 30,
            },
        });
        assert!(tier_answered(&applied, "360p15"));
        assert!(!tier_answered(&applied, "480p15"));
        let (r, detail) = tier_answer(&applied, "pin 360p15", 42);
        assert_eq!(r, CommandResult::Ok);
        assert!(
            detail.contains("500 kbit/s") && detail.contains("seq=42"),
            "{detail}"
        );
        let failed = TierState::Failed {
            tier: "360p15",
            error: "no".into(),
        };
        assert_eq!(tier_answer(&failed, "x", 1).0, CommandResult::Failed);
    }

    #[tokio::test]
    async fn reboot_reports_what_the_command_did() {
        assert_eq!(start_reboot(&[]).await.0, CommandResult::Unsupported);
        let ok = start_reboot(&["true".into()]).await;
        assert_eq!(ok.0, CommandResult::Ok, "{}", ok.1);
        let failed = start_reboot(&["false".into()]).await;
        assert_eq!(failed.0, CommandResult::Failed, "{}", failed.1);
        let missing = start_reboot(&["/nonexistent/reboot".into()]).await;
        assert_eq!(missing.0, CommandResult::Failed);
        assert!(missing.1.contains("cannot run"), "{}", missing.1);
    }
}
