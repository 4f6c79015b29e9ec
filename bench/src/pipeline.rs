//! Camera → server → viewer on loopback, with the real pieces: the camera's
//! capture thread and uplink (`kodama_firmware`), the server (a child
//! process or in process, see [`crate::server`]) and the viewer client
//! (`kodama_server::viewer`). Every node is its own offline iroh endpoint on
//! 127.0.0.1 and is on the server's allowlist.
//!
//! Cameras replay pre-encoded H.264 in real time, so the bench spends its
//! CPU on networking, not on encoding. Latency is the viewer's receive time
//! minus the frame's capture timestamp (both this machine's wall clock).
//! Only frames received inside the measurement window count; the warm-up
//! before it lets every viewer get past the cached GOP it starts with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::{Bytes, BytesMut};
use kodama_firmware::uplink::{self, AuxMessage, LinkState, UplinkIo, UplinkOptions};
use kodama_firmware::video::synthetic::ReplaySource;
use kodama_firmware::video::{
    spawn_capture, EncodedFrame, VideoError, VideoFormat, VideoSettings, VideoSource,
};
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::media_recv::Received;
use kodama_net::{Endpoint, EndpointAddr, SecretKey};
use kodama_proto::{CameraSelector, Channel};
use kodama_server::allowlist::{Allowlist, PeerRole};
use kodama_server::stats::now_us;
use kodama_server::viewer::{ViewerClient, ViewerEvent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::procfs::{self, Memory};
use crate::server::{Mode, Running};

/// How long a camera may take to connect and hand over its hello.
const CAMERA_CONNECT_LIMIT: Duration = Duration::from_secs(15);

/// How long a viewer may keep retrying (the server learns a camera's name
/// from its hello, a moment after the camera reports it is streaming).
const VIEWER_CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Latency samples kept per viewer (30 fps for over half an hour).
const MAX_SAMPLES: usize = 65_536;

/// Bound on each teardown step, so a stuck peer cannot hang the bench.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

/// How long an upstream's copy may take to catch up after an outage, on
/// top of the outage itself.
pub const FILL_LIMIT: Duration = Duration::from_secs(120);

/// One camera × viewer layout to measure.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Label for the report.
    pub name: String,
    /// Cameras streaming at once.
    pub cameras: usize,
    /// Viewers watching each camera.
    pub viewers_per_camera: usize,
    /// Time after the last viewer connected before measuring.
    pub warmup: Duration,
    /// The measurement window.
    pub measure: Duration,
    /// Forward every camera to a second (upstream) server in this process
    /// and put the viewers there: camera → server → upstream → viewer.
    pub relay: bool,
    /// With `relay`: after the window, stop the upstream for this long,
    /// start it again on the same address and data, and time how long the
    /// server takes to fill the gap in the upstream's recording.
    pub upstream_outage: Option<Duration>,
}

/// How an upstream's copy caught up after an outage.
#[derive(Debug, Clone, Copy)]
pub struct OutageResult {
    /// How long the upstream was down.
    pub outage: Duration,
    /// From the upstream starting again to its index holding every frame
    /// filmed up to then (reconnecting included).
    pub filled_in: Duration,
    /// Video frames filmed while it was down.
    pub frames_missed: u64,
    /// Payload bytes filmed while it was down (the camera's bitrate ×
    /// the outage).
    pub bytes_missed: u64,
}

/// A camera's stream, encoded once and shared by every simulated camera
/// (and by the raw baseline's senders, so both send the same bytes).
#[derive(Debug, Clone)]
pub struct Stream {
    /// The replay loop, already padded: whole GOPs, starting on a keyframe.
    pub frames: Arc<Vec<EncodedFrame>>,
    /// What the replay loop averages, payload bits per second.
    pub bitrate_bps: f64,
    /// Its format.
    pub format: VideoFormat,
    /// The encoder target it was made with.
    pub target_kbps: u32,
    /// Frames per GOP (the keyframe interval).
    pub gop_frames: u32,
    /// What the encoder itself produced, payload bits per second.
    pub encoded_bps: f64,
    /// Access units are padded by this factor to reach the target (1.0: not padded).
    pub pad_factor: f64,
}

impl Stream {
    /// Encodes `seconds` of the synthetic pattern with `settings`. With
    /// `pad`, a stream below the target bitrate (the pattern compresses
    /// well) is padded up to it with filler data.
    pub fn prerender(settings: VideoSettings, seconds: u32, pad: bool) -> Result<Self, VideoError> {
        let mut replay = ReplaySource::prerender(settings, seconds, false)?;
        let encoded_bps = replay.bitrate_kbps() as f64 * 1000.0;
        let target_bps = f64::from(settings.bitrate_kbps) * 1000.0;
        let pad_factor = if pad && encoded_bps > 0.0 && encoded_bps < target_bps {
            target_bps / encoded_bps
        } else {
            1.0
        };
        // The loop `ReplaySource::prerender` made: whole GOPs covering `seconds`.
        let gop = settings.keyframe_interval.max(1);
        let count = (seconds * settings.fps).max(1).div_ceil(gop) * gop;
        let frames = (0..count)
            .map(|_| {
                let mut f = replay.next_frame()?;
                if pad_factor > 1.0 {
                    f.data = pad_with_filler(&f.data, pad_factor);
                }
                Ok(f)
            })
            .collect::<Result<Vec<_>, VideoError>>()?;
        Self::from_frames(frames, replay.format(), settings, encoded_bps, pad_factor)
    }

    /// A stream replaying `frames` (e.g. read back by a child process).
    pub fn from_frames(
        frames: Vec<EncodedFrame>,
        format: VideoFormat,
        settings: VideoSettings,
        encoded_bps: f64,
        pad_factor: f64,
    ) -> Result<Self, VideoError> {
        if !frames.first().is_some_and(|f| f.keyframe) {
            return Err(VideoError::Encoder(
                "a replay loop must start with a keyframe".into(),
            ));
        }
        let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        let secs = frames.len() as f64 / f64::from(format.fps.max(1));
        Ok(Self {
            bitrate_bps: bytes as f64 * 8.0 / secs,
            frames: Arc::new(frames),
            encoded_bps,
            pad_factor,
            format,
            target_kbps: settings.bitrate_kbps,
            gop_frames: settings.keyframe_interval.max(1),
        })
    }

    /// A source replaying the loop in real time from its first frame.
    pub fn paced(&self) -> Paced {
        Paced {
            frames: self.frames.clone(),
            fps: self.format.fps.max(1),
            format: self.format,
            start: None,
            index: 0,
        }
    }
}

/// Paces a replay loop at its frame rate, counting from the first frame
/// asked for, so copies started at different times each run in real time.
/// The capture timestamp is taken after the wait.
#[derive(Debug)]
pub struct Paced {
    frames: Arc<Vec<EncodedFrame>>,
    fps: u32,
    format: VideoFormat,
    start: Option<Instant>,
    index: u64,
}

/// Bytes a filler-data NAL unit needs besides its 0xFF payload: a 4-byte
/// start code, the NAL header and the RBSP stop bit byte.
const FILLER_OVERHEAD: usize = 6;

/// Grows an Annex-B access unit to about `factor` times its size by
/// appending one filler-data NAL unit (nal_unit_type 12, H.264 clause
/// 7.3.2.7: 0xFF bytes then `rbsp_trailing_bits`). Clause 7.4.1.2.3 allows
/// filler after the primary coded picture's slices, and decoders discard it,
/// so the stream stays decodable; this is how CBR encoders reach their rate.
pub fn pad_with_filler(access_unit: &Bytes, factor: f64) -> Bytes {
    let target = (access_unit.len() as f64 * factor).round() as usize;
    if target < access_unit.len() + FILLER_OVERHEAD + 1 {
        return access_unit.clone();
    }
    let mut out = BytesMut::with_capacity(target);
    out.extend_from_slice(access_unit);
    // forbidden_zero_bit 0, nal_ref_idc 0, nal_unit_type 12.
    out.extend_from_slice(&[0, 0, 0, 1, 0x0C]);
    out.resize(target - 1, 0xFF);
    out.extend_from_slice(&[0x80]);
    out.freeze()
}

impl VideoSource for Paced {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + Duration::from_micros(self.index * 1_000_000 / u64::from(self.fps));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let n = self.frames.len() as u64;
        let mut frame = self.frames[(self.index % n) as usize].clone();
        self.index += 1;
        frame.capture_us = now_us();
        Ok(frame)
    }

    fn set_bitrate(&mut self, _kbps: u32) -> Result<(), VideoError> {
        Err(VideoError::Encoder(
            "a replayed stream has a fixed bitrate".into(),
        ))
    }

    fn request_keyframe(&mut self) {
        // The loop is whole GOPs: jump to the next keyframe in it.
        let n = self.frames.len() as u64;
        if let Some(next) =
            (self.index..self.index + n).find(|i| self.frames[(i % n) as usize].keyframe)
        {
            self.index = next;
        }
    }
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Samples.
    pub samples: usize,
}

/// Nearest-rank percentiles of `samples` (µs).
pub fn latency(mut samples: Vec<u64>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64 / 1000.0
    };
    Some(Latency {
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: samples[samples.len() - 1] as f64 / 1000.0,
        samples: samples.len(),
    })
}

/// What a scenario achieved.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The layout.
    pub scenario: Scenario,
    /// Viewers that connected.
    pub viewers: usize,
    /// Length of the measurement window.
    pub window: Duration,
    /// Payload bits per second the cameras offered, summed.
    pub ingest_offered_bps: f64,
    /// Payload bits per second the viewers should have received, summed.
    pub offered_bps: f64,
    /// Video payload bytes the viewers received in the window.
    pub delivered_bytes: u64,
    /// Video frames the viewers received in the window.
    pub frames_received: u64,
    /// Frames a viewer would receive at the camera's frame rate, summed.
    pub frames_expected: u64,
    /// Gaps in the video sequence numbers the viewers saw (frames dropped on
    /// the way: by a camera's or the server's sender, or skipped forward).
    pub frames_dropped: u64,
    /// Viewers whose connection ended early, with the reason.
    pub closed_early: Vec<String>,
    /// Capture → viewer latency.
    pub latency: Option<Latency>,
    /// Server CPU (user + system) in the window; `None` in process.
    pub server_cpu: Option<Duration>,
    /// Server memory at the end of the window; `None` in process.
    pub server_memory: Option<Memory>,
    /// This process's CPU in the window (cameras, viewers, and the server
    /// too when it runs in process).
    pub bench_cpu: Duration,
    /// The upstream outage, if the scenario had one; `None` too if the gap
    /// was not filled within [`FILL_LIMIT`] (reported as such).
    pub outage: Option<Result<OutageResult, String>>,
}

impl ScenarioResult {
    /// Bits per second delivered to viewers.
    pub fn delivered_bps(&self) -> f64 {
        self.delivered_bytes as f64 * 8.0 / self.window.as_secs_f64().max(1e-9)
    }

    /// Server CPU seconds per 10^9 payload bytes delivered.
    pub fn cpu_secs_per_gb(&self) -> Option<f64> {
        let cpu = self.server_cpu?.as_secs_f64();
        (self.delivered_bytes > 0).then(|| cpu / (self.delivered_bytes as f64 / 1e9))
    }
}

/// Per-viewer tally.
#[derive(Debug, Default)]
struct Tally {
    bytes: u64,
    frames: u64,
    gaps: u64,
    latencies_us: Vec<u64>,
    closed: Option<String>,
}

async fn bind_local(secret: SecretKey) -> anyhow::Result<Endpoint> {
    Ok(endpoint::bind(
        secret,
        &EndpointOptions {
            offline: true,
            bind: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            alpns: Vec::new(),
        },
    )
    .await?)
}

/// One simulated camera: the firmware's capture thread and uplink.
pub struct Camera {
    /// Its endpoint.
    pub endpoint: Endpoint,
    uplink: tokio::task::JoinHandle<()>,
    capture: std::thread::JoinHandle<Result<(), VideoError>>,
    /// Kept open: the uplink treats a closed aux channel as "no telemetry".
    _aux: mpsc::Sender<AuxMessage>,
    /// The uplink's state.
    pub state: watch::Receiver<LinkState>,
}

impl Camera {
    /// Waits (bounded) for the uplink and capture thread to end after their
    /// cancel token fired, then closes the endpoint.
    pub async fn stop(self) {
        let _ = tokio::time::timeout(TEARDOWN_LIMIT, self.uplink).await;
        let capture = self.capture;
        let joined = tokio::task::spawn_blocking(move || capture.join());
        match tokio::time::timeout(TEARDOWN_LIMIT, joined).await {
            Ok(Ok(Ok(Err(e)))) => tracing::warn!("capture thread failed: {e}"),
            Ok(Ok(Ok(Ok(())))) => {}
            _ => tracing::warn!("capture thread did not stop cleanly"),
        }
        let _ = tokio::time::timeout(TEARDOWN_LIMIT, self.endpoint.close()).await;
    }
}

/// Starts a camera replaying `source` (a [`Paced`] copy of `stream`) to `server`.
pub async fn start_camera(
    secret: SecretKey,
    name: String,
    source: Box<dyn VideoSource>,
    stream: &Stream,
    server: EndpointAddr,
    cancel: CancellationToken,
) -> anyhow::Result<Camera> {
    let endpoint = bind_local(secret).await?;
    let capture = spawn_capture(source, cancel.clone())?;
    let (aux_tx, aux_rx) = mpsc::channel(4);
    let (state_tx, state) = watch::channel(LinkState::Connecting { attempt: 0 });
    let uplink = tokio::spawn(uplink::run(
        endpoint.clone(),
        UplinkOptions {
            server,
            name,
            format: stream.format,
            bitrate_kbps: stream.target_kbps,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            reboot_command: Vec::new(),
            links: None,
            audio: None,
            abr: false,
            congestion: Default::default(),
        },
        UplinkIo {
            frames: capture.frames,
            aux: aux_rx,
            control: capture.control,
            state: state_tx,
            store: None,
            tier: capture.tier,
            status: watch::channel(Default::default()).0,
            updates: None,
        },
        cancel,
    ));
    Ok(Camera {
        endpoint,
        uplink,
        capture: capture.thread,
        _aux: aux_tx,
        state,
    })
}

/// Connects a viewer, retrying while the server does not know the camera yet.
async fn connect_viewer(
    endpoint: &Endpoint,
    server: &EndpointAddr,
    camera: &str,
) -> anyhow::Result<ViewerClient> {
    let deadline = tokio::time::Instant::now() + VIEWER_CONNECT_LIMIT;
    loop {
        match ViewerClient::connect(
            endpoint,
            server.clone(),
            CameraSelector::Name(camera.to_owned()),
        )
        .await
        {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("viewer of {camera}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(anyhow!("viewer of {camera} could not connect: {e}")),
        }
    }
}

/// Reads video until `end`, counting what arrives from `start` on.
async fn watch_viewer(
    mut client: ViewerClient,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    cancel: CancellationToken,
) -> Tally {
    let mut t = Tally::default();
    let mut last_sequence: Option<u64> = None;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(end) => break,
            e = client.next() => e,
        };
        match event {
            ViewerEvent::Media(Received::Frame(_, frame)) if frame.channel == Channel::Video => {
                let latency = now_us().saturating_sub(frame.capture_us);
                let counting = tokio::time::Instant::now() >= start;
                if let Some(prev) = last_sequence {
                    if counting && frame.sequence > prev + 1 {
                        t.gaps += frame.sequence - prev - 1;
                    }
                }
                last_sequence = Some(frame.sequence);
                if counting {
                    t.bytes += frame.payload.len() as u64;
                    t.frames += 1;
                    if t.latencies_us.len() < MAX_SAMPLES {
                        t.latencies_us.push(latency);
                    }
                }
            }
            ViewerEvent::Media(_) | ViewerEvent::Control(_) => {}
            ViewerEvent::Closed(reason) => {
                t.closed = Some(reason);
                break;
            }
        }
    }
    client.close();
    t
}

/// Runs one scenario end to end and tears everything down.
pub async fn run(
    scenario: &Scenario,
    stream: &Stream,
    mode: &Mode,
    cancel: CancellationToken,
) -> anyhow::Result<ScenarioResult> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let data_dir = dir.path().join("server");
    std::fs::create_dir_all(&data_dir)?;
    let allowlist = Allowlist::new(data_dir.join("allowlist.toml"));

    // Identities first, all allowed before the server starts.
    let camera_keys: Vec<SecretKey> = (0..scenario.cameras)
        .map(|_| SecretKey::generate())
        .collect();
    let viewer_keys: Vec<SecretKey> = (0..scenario.cameras * scenario.viewers_per_camera)
        .map(|_| SecretKey::generate())
        .collect();
    for (i, k) in camera_keys.iter().enumerate() {
        allowlist.add(
            &k.public().to_string(),
            PeerRole::Camera,
            &format!("bench camera {i}"),
        )?;
    }
    for (i, k) in viewer_keys.iter().enumerate() {
        allowlist.add(
            &k.public().to_string(),
            PeerRole::Viewer,
            &format!("bench viewer {i}"),
        )?;
    }

    let scope = cancel.child_token();
    // Relay: an upstream server in this process that allows the server
    // under test as a relay carrying every camera, with the viewers there.
    let mut upstream = if scenario.relay {
        let home = kodama_net::endpoint::load_or_create_key(&data_dir.join("server.key"))?.public();
        Some(
            Upstream::start(
                dir.path().join("upstream"),
                &home,
                &camera_keys,
                &viewer_keys,
                scope.child_token(),
            )
            .await?,
        )
    } else {
        None
    };
    let started = Running::start(
        mode,
        &data_dir,
        upstream.as_ref().map(|u| &u.dial),
        scope.child_token(),
    )
    .await;
    let (server, server_addr) = match started {
        Ok(s) => s,
        Err(e) => {
            if let Some(up) = upstream {
                up.stop().await;
            }
            return Err(e);
        }
    };
    let viewers_at = upstream.as_ref().map_or(&server_addr, |u| &u.dial).clone();
    let outcome = drive(
        scenario,
        stream,
        &server,
        (&server_addr, &viewers_at),
        (camera_keys, viewer_keys),
        upstream.as_mut(),
        scope.clone(),
    )
    .await;
    scope.cancel();
    if let Some(up) = upstream {
        up.stop().await;
    }
    let log = server.log().map(ToOwned::to_owned);
    server.stop().await;
    outcome.map_err(
        |e| match log.and_then(|l| std::fs::read_to_string(l).ok()) {
            Some(text) if !text.trim().is_empty() => e.context(format!("server log:\n{text}")),
            _ => e,
        },
    )
}

/// The upstream server of a relay scenario, in this process; it can go
/// away and come back on the same address and data.
struct Upstream {
    config: kodama_server::config::Config,
    server: Option<kodama_server::app::Server>,
    dial: EndpointAddr,
    scope: CancellationToken,
}

impl Upstream {
    /// An upstream in `dir` that allows `home` as a relay carrying every
    /// camera, and the viewers.
    async fn start(
        dir: std::path::PathBuf,
        home: &kodama_net::EndpointId,
        cameras: &[SecretKey],
        viewers: &[SecretKey],
        scope: CancellationToken,
    ) -> anyhow::Result<Self> {
        let list = Allowlist::new(dir.join("allowlist.toml"));
        let carried: Vec<String> = cameras.iter().map(|k| k.public().to_string()).collect();
        list.add_relay(&home.to_string(), "bench home", &carried)?;
        for (i, k) in viewers.iter().enumerate() {
            list.add(
                &k.public().to_string(),
                PeerRole::Viewer,
                &format!("bench viewer {i}"),
            )?;
        }
        let mut config = kodama_server::config::Config::default();
        config.server.data_dir = dir;
        config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.offline = true;
        config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = kodama_server::app::Server::start(&config, scope.child_token()).await?;
        let addr = server
            .node
            .endpoint()
            .bound_sockets()
            .first()
            .copied()
            .context("the upstream has no bound socket")?;
        // Back on the same address after an outage, as a real server would be.
        config.server.listen = addr;
        let dial = EndpointAddr::new(server.node.endpoint().id()).with_ip_addr(addr);
        Ok(Self {
            config,
            server: Some(server),
            dial,
            scope,
        })
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops the upstream for `down`, starts it again and waits (bounded
    /// by [`FILL_LIMIT`]) until its index holds every frame of `camera`
    /// from its first recorded one to one filmed after the restart.
    async fn outage(
        &mut self,
        camera: &str,
        down: Duration,
        bitrate_bps: f64,
        fps: u32,
        cancel: &CancellationToken,
    ) -> anyhow::Result<OutageResult> {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        tokio::time::sleep(down).await;
        let restarted = Instant::now();
        let restarted_us = now_us() as i64;
        self.server = Some(
            kodama_server::app::Server::start(&self.config, self.scope.child_token())
                .await
                .context("the upstream starting again")?,
        );
        let index = self.config.server.data_dir.join("kodama.db");
        let deadline = restarted + down + FILL_LIMIT;
        loop {
            if cancel.is_cancelled() {
                anyhow::bail!("interrupted");
            }
            if covered_past(&index, camera, restarted_us)? {
                return Ok(OutageResult {
                    outage: down,
                    filled_in: restarted.elapsed(),
                    frames_missed: (down.as_secs_f64() * f64::from(fps)).round() as u64,
                    bytes_missed: (down.as_secs_f64() * bitrate_bps / 8.0) as u64,
                });
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the upstream's copy still had a gap {:?} after it came back",
                    restarted.elapsed()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether the index at `path` holds `camera`'s frames without a sequence
/// gap from its first recorded frame to a fragment captured after `after_us`.
fn covered_past(path: &std::path::Path, camera: &str, after_us: i64) -> anyhow::Result<bool> {
    let db = kodama_server::db::Db::open(path)?;
    let Some(row) = db.cameras()?.into_iter().find(|c| c.endpoint == camera) else {
        return Ok(false);
    };
    let mut runs: Vec<(i64, i64, i64)> = db
        .fragment_origins(row.id)?
        .into_iter()
        .map(|(capture_us, first_seq, frames, _)| (first_seq, frames, capture_us))
        .collect();
    runs.sort_unstable();
    let mut next = None;
    for (first_seq, frames, capture_us) in runs {
        if next.is_some_and(|n| first_seq > n) {
            return Ok(false);
        }
        if capture_us > after_us {
            return Ok(true);
        }
        next = Some(next.map_or(first_seq + frames, |n: i64| n.max(first_seq + frames)));
    }
    Ok(false)
}

async fn drive(
    scenario: &Scenario,
    stream: &Stream,
    server: &Running,
    // Where cameras dial, and where viewers do (an upstream when relaying).
    (server_addr, viewers_at): (&EndpointAddr, &EndpointAddr),
    // The cameras' and the viewers' identities.
    (camera_keys, viewer_keys): (Vec<SecretKey>, Vec<SecretKey>),
    upstream: Option<&mut Upstream>,
    cancel: CancellationToken,
) -> anyhow::Result<ScenarioResult> {
    let fps = stream.format.fps.max(1);
    let camera_ids: Vec<String> = camera_keys.iter().map(|k| k.public().to_string()).collect();
    // Stagger camera starts across one GOP so keyframes do not all coincide,
    // as they would not in a real deployment.
    let gop = Duration::from_secs_f64(f64::from(stream.gop_frames) / f64::from(fps));
    let stagger = gop / scenario.cameras.max(1) as u32;
    let mut cameras = Vec::new();
    let mut viewer_endpoints = Vec::new();
    let result = async {
        for (i, key) in camera_keys.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(stagger).await;
            }
            let mut cam = start_camera(key, format!("bench-cam-{i}"), Box::new(stream.paced()), stream, server_addr.clone(), cancel.clone()).await?;
            let streaming = tokio::time::timeout(CAMERA_CONNECT_LIMIT, cam.state.wait_for(|s| *s == LinkState::Streaming))
                .await
                .map(|r| r.map(|_| ()));
            let state = cam.state.borrow().clone();
            cameras.push(cam);
            if !matches!(streaming, Ok(Ok(_))) {
                return Err(anyhow!("camera {i} did not start streaming within {CAMERA_CONNECT_LIMIT:?} (state {state:?})"));
            }
        }
        let mut clients = Vec::new();
        for (i, key) in viewer_keys.into_iter().enumerate() {
            // The server's record names the camera (its allowlist label), not its hello.
            let camera = format!("bench camera {}", i / scenario.viewers_per_camera.max(1));
            let ep = bind_local(key).await?;
            viewer_endpoints.push(ep.clone());
            clients.push(connect_viewer(&ep, viewers_at, &camera).await?);
        }
        let start = tokio::time::Instant::now() + scenario.warmup;
        let end = start + scenario.measure;
        let mut viewers = JoinSet::new();
        for c in clients {
            viewers.spawn(watch_viewer(c, start, end, cancel.clone()));
        }
        let viewers_connected = viewers.len();

        tokio::time::sleep_until(start).await;
        let pid = server.pid();
        let server_before = pid.map(|p| procfs::sample(Some(p))).transpose()?;
        let bench_before = procfs::cpu(None)?;
        let started = Instant::now();
        tokio::time::sleep_until(end).await;
        let window = started.elapsed();
        let server_after = pid.map(|p| procfs::sample(Some(p))).transpose()?;
        let bench_after = procfs::cpu(None)?;

        let mut tallies = Vec::new();
        let joined = tokio::time::timeout(TEARDOWN_LIMIT, async {
            while let Some(t) = viewers.join_next().await {
                tallies.push(t.context("viewer task")?);
            }
            anyhow::Ok(())
        })
        .await;
        joined.map_err(|_| anyhow!("viewers did not stop within {TEARDOWN_LIMIT:?}"))??;

        let mut latencies = Vec::new();
        let (mut bytes, mut frames, mut gaps, mut closed_early) = (0, 0, 0, Vec::new());
        for t in tallies {
            bytes += t.bytes;
            frames += t.frames;
            gaps += t.gaps;
            latencies.extend(t.latencies_us);
            closed_early.extend(t.closed);
        }
        let per_camera = stream.bitrate_bps;
        let outage = match (scenario.upstream_outage, upstream, camera_ids.first()) {
            (Some(down), Some(up), Some(camera)) => Some(
                up.outage(camera, down, per_camera, fps, &cancel)
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
            _ => None,
        };
        Ok(ScenarioResult {
            scenario: scenario.clone(),
            viewers: viewers_connected,
            window,
            ingest_offered_bps: per_camera * scenario.cameras as f64,
            offered_bps: per_camera * viewers_connected as f64,
            delivered_bytes: bytes,
            frames_received: frames,
            frames_expected: (window.as_secs_f64() * f64::from(fps)).round() as u64 * viewers_connected as u64,
            frames_dropped: gaps,
            closed_early,
            latency: latency(latencies),
            server_cpu: match (server_before, server_after) {
                (Some(b), Some(a)) => Some(procfs::ticks_to_duration(a.cpu.total().saturating_sub(b.cpu.total()))),
                _ => None,
            },
            server_memory: server_after.map(|s| s.memory),
            bench_cpu: procfs::ticks_to_duration(bench_after.total().saturating_sub(bench_before.total())),
            outage,
        })
    }
    .await;

    // Teardown, all cameras and viewers at once, each step bounded: uplinks
    // close politely, capture threads end within a frame, endpoints close.
    cancel.cancel();
    let mut closing = JoinSet::new();
    for cam in cameras {
        closing.spawn(cam.stop());
    }
    for ep in viewer_endpoints {
        closing.spawn(async move {
            let _ = tokio::time::timeout(TEARDOWN_LIMIT, ep.close()).await;
        });
    }
    while closing.join_next().await.is_some() {}
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodama_media::h264;

    #[test]
    fn filler_keeps_the_access_unit_and_reaches_the_size() {
        let au = Bytes::from_static(&[
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88, 0x84,
        ]);
        let padded = pad_with_filler(&au, 4.0);
        assert_eq!(padded.len(), au.len() * 4);
        assert_eq!(&padded[..au.len()], &au[..]);
        let types: Vec<u8> = h264::nal_units(&padded)
            .filter_map(h264::unit_type)
            .collect();
        assert_eq!(types, vec![7, 8, 5, 12]);
        let filler = h264::nal_units(&padded).last().expect("filler NAL");
        assert!(filler[1..filler.len() - 1].iter().all(|b| *b == 0xFF));
        assert_eq!(filler.last(), Some(&0x80));
        assert!(h264::is_idr(&padded));
        // Too little room for a NAL unit: unchanged.
        assert_eq!(pad_with_filler(&au, 1.1), au);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let l = latency((1..=100).map(|ms| ms * 1000).collect()).expect("samples");
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert!(latency(Vec::new()).is_none());
        let one = latency(vec![2500]).expect("one sample");
        assert_eq!((one.p50_ms, one.p99_ms), (2.5, 2.5));
    }
}
