//! Test harness: a server, simulated cameras and viewers on loopback, all offline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kodama_firmware::backlog::{Backlog, BacklogConfig, BacklogStatus, StoreForward};
use kodama_firmware::uplink::{self, AuxMessage, LinkState, UplinkIo, UplinkOptions};
use kodama_firmware::video::synthetic::ReplaySource;
use kodama_firmware::video::{
    spawn_capture, EncodedFrame, VideoError, VideoFormat, VideoSettings, VideoSource,
};
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::{Endpoint, EndpointAddr, SecretKey};
use kodama_proto::CameraSelector;
use kodama_server::allowlist::PeerRole;
use kodama_server::app::Server;
use kodama_server::config::Config;
use kodama_server::viewer::ViewerClient;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

/// Captured log output of the whole test binary.
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info,iroh=warn,noq=warn")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish()
            // As `kodama-server` does: recent events for the overview and `top`.
            .with(kodama_server::metrics::recent::RecentLayer);
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        std::io::stderr().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the captured logs contain `needle`.
pub fn logged(needle: &str) -> bool {
    logs()
        .lock()
        .map(|v| String::from_utf8_lossy(&v).contains(needle))
        .unwrap_or(false)
}

pub fn settings() -> VideoSettings {
    VideoSettings {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_kbps: 300,
        keyframe_interval: 15,
    }
}

/// The configuration test servers run with: offline, loopback, any free
/// API port, data in `data_dir`, QUIC on `port` (0 or `None`: any).
pub fn test_config(data_dir: std::path::PathBuf, port: Option<u16>) -> Config {
    let mut config = Config::default();
    config.server.data_dir = data_dir;
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0)));
    config.server.offline = true;
    config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// A running test server.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub config: Config,
    pub cancel: CancellationToken,
    pub _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(dir.path().to_owned(), None).await;
        s._dir = Some(dir);
        s
    }

    /// Starts a server in `data_dir` on `port` (0 = any).
    pub async fn start_in(data_dir: std::path::PathBuf, port: Option<u16>) -> Self {
        Self::try_start_in(data_dir, port)
            .await
            .expect("server starts")
    }

    /// Like [`TestServer::start_in`], retrying (bounded) while the port is
    /// still held by a server that just stopped without a goodbye.
    pub async fn restart_in(data_dir: std::path::PathBuf, port: u16) -> Self {
        for _ in 0..50 {
            match Self::try_start_in(data_dir.clone(), Some(port)).await {
                Ok(s) => return s,
                Err(e) => {
                    tracing::info!("restart: {e:#}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        panic!("the server could not bind port {port} again within 2.5 s");
    }

    /// Starts a server with `configure` applied over the test defaults.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::try_start_configured(dir.path().to_owned(), None, configure)
            .await
            .expect("server starts");
        s._dir = Some(dir);
        s
    }

    async fn try_start_in(data_dir: std::path::PathBuf, port: Option<u16>) -> anyhow::Result<Self> {
        Self::start_config(test_config(data_dir, port)).await
    }

    async fn try_start_configured(
        data_dir: std::path::PathBuf,
        port: Option<u16>,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let mut config = test_config(data_dir, port);
        configure(&mut config);
        Self::start_config(config).await
    }

    /// Starts a server with `config` (see [`test_config`]).
    pub async fn start_config(config: Config) -> anyhow::Result<Self> {
        logs();
        let cancel = CancellationToken::new();
        let server = Server::start(&config, cancel.clone()).await?;
        let addr = server
            .node
            .endpoint()
            .bound_sockets()
            .into_iter()
            .find(SocketAddr::is_ipv4)
            .expect("bound");
        Ok(Self {
            server,
            addr,
            config,
            cancel,
            _dir: None,
        })
    }

    pub fn dial_addr(&self) -> EndpointAddr {
        EndpointAddr::new(self.server.node.endpoint().id()).with_ip_addr(self.addr)
    }

    /// Allows a peer under a name made from its key.
    pub fn allow(&self, key: &SecretKey, role: PeerRole) {
        self.server
            .allowlist
            .add(&key.public().to_string(), role, "")
            .expect("allow");
    }

    /// Allows a camera under `name` (the server's record of its name).
    pub fn allow_camera(&self, key: &SecretKey, name: &str) {
        self.server
            .allowlist
            .add(&key.public().to_string(), PeerRole::Camera, name)
            .expect("allow camera");
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

pub async fn offline_endpoint(secret: SecretKey) -> Endpoint {
    endpoint::bind(
        secret,
        &EndpointOptions {
            offline: true,
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            alpns: Vec::new(),
        },
    )
    .await
    .expect("endpoint")
}

/// A video source that remembers every access unit it produced, by capture time.
pub struct Recording {
    inner: ReplaySource,
    sent: Arc<Mutex<HashMap<u64, EncodedFrame>>>,
    /// Pad each access unit to at least this many bytes with a filler-data
    /// NAL unit (H.264 7.3.2.7; decoders skip it), for a deterministic rate.
    pad_to: usize,
}

/// Appends a filler-data NAL unit (type 12) so `au` is at least `len` bytes.
fn pad(au: &mut Vec<u8>, len: usize) {
    if au.len() + 6 >= len {
        return;
    }
    au.extend_from_slice(&[0, 0, 0, 1, 0x0c]);
    au.resize(len - 1, 0xff);
    au.push(0x80);
}

impl VideoSource for Recording {
    fn format(&self) -> VideoFormat {
        self.inner.format()
    }
    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError> {
        let mut f = self.inner.next_frame()?;
        if self.pad_to > 0 {
            let mut au = f.data.to_vec();
            pad(&mut au, self.pad_to);
            f.data = au.into();
        }
        let mut sent = self.sent.lock().expect("lock");
        // Capture times are the map key; keep them unique.
        while sent.contains_key(&f.capture_us) {
            f.capture_us += 1;
        }
        sent.insert(f.capture_us, f.clone());
        Ok(f)
    }
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        self.inner.set_bitrate(kbps)
    }
    fn request_keyframe(&mut self) {
        self.inner.request_keyframe()
    }
}

/// A simulated camera running the real uplink.
pub struct TestCamera {
    pub key: SecretKey,
    pub name: String,
    pub sent: Arc<Mutex<HashMap<u64, EncodedFrame>>>,
    pub state: watch::Receiver<LinkState>,
    pub aux: mpsc::Sender<AuxMessage>,
    pub cancel: CancellationToken,
    pub endpoint: Endpoint,
    /// The backlog's status, when the camera keeps one.
    pub backlog: Option<watch::Receiver<BacklogStatus>>,
    /// The uplink task (ends after a stop, once the backlog is flushed).
    pub uplink: tokio::task::JoinHandle<()>,
}

pub async fn start_camera(name: &str, server: EndpointAddr, key: SecretKey) -> TestCamera {
    start_camera_with(name, server, key, settings(), 0).await
}

/// A camera with its own video settings.
pub async fn start_camera_with(
    name: &str,
    server: EndpointAddr,
    key: SecretKey,
    settings: VideoSettings,
    pad_to: usize,
) -> TestCamera {
    start_camera_full(name, server, key, settings, pad_to, None, false, None).await
}

/// A camera that takes firmware updates with `cfg` (update directory,
/// RAUC command, health gate) and reboots with `reboot_command`.
pub async fn start_camera_updating(
    name: &str,
    server: EndpointAddr,
    key: SecretKey,
    cfg: kodama_firmware::update::UpdateConfig,
    reboot_command: Vec<String>,
) -> (TestCamera, kodama_firmware::update::Updater) {
    let mut updater = None;
    let cam = start_camera_full(
        name,
        server,
        key,
        settings(),
        0,
        None,
        false,
        Some((cfg, reboot_command, &mut updater)),
    )
    .await;
    (cam, updater.expect("updater started"))
}

/// A camera that keeps a store-and-forward backlog in `backlog_dir` (the
/// same directory across a simulated reboot).
pub async fn start_camera_with_backlog(
    name: &str,
    server: EndpointAddr,
    key: SecretKey,
    backlog_dir: &std::path::Path,
) -> TestCamera {
    start_camera_full(
        name,
        server,
        key,
        settings(),
        0,
        Some(backlog_dir),
        false,
        None,
    )
    .await
}

/// A camera with a backlog (as [`start_camera_with_backlog`]) and a
/// (synthetic, speech-like) microphone.
pub async fn start_camera_with_backlog_and_audio(
    name: &str,
    server: EndpointAddr,
    key: SecretKey,
    backlog_dir: &std::path::Path,
) -> TestCamera {
    start_camera_full(
        name,
        server,
        key,
        settings(),
        0,
        Some(backlog_dir),
        true,
        None,
    )
    .await
}

/// A camera with a (synthetic, speech-like) microphone: Opus on the audio channel.
pub async fn start_camera_with_audio(
    name: &str,
    server: EndpointAddr,
    key: SecretKey,
) -> TestCamera {
    start_camera_full(name, server, key, settings(), 0, None, true, None).await
}

// Every camera option a test may set; the public helpers above name the
// combinations tests use.
#[allow(clippy::too_many_arguments)]
async fn start_camera_full(
    name: &str,
    server: EndpointAddr,
    key: SecretKey,
    settings: VideoSettings,
    pad_to: usize,
    backlog_dir: Option<&std::path::Path>,
    audio: bool,
    updates: Option<(
        kodama_firmware::update::UpdateConfig,
        Vec<String>,
        &mut Option<kodama_firmware::update::Updater>,
    )>,
) -> TestCamera {
    let source = tokio::task::spawn_blocking(move || ReplaySource::prerender(settings, 2, true))
        .await
        .expect("prerender task")
        .expect("replay");
    eprintln!("camera {name}: replaying {} kbit/s", source.bitrate_kbps());
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let recording = Recording {
        inner: source,
        sent: sent.clone(),
        pad_to,
    };
    let format = recording.format();
    let cancel = CancellationToken::new();
    let capture = spawn_capture(Box::new(recording), cancel.clone()).expect("capture");
    let (aux_tx, aux_rx) = mpsc::channel(64);
    let audio = audio.then(|| {
        use kodama_firmware::audio;
        let encoder = audio::OpusPacketizer::new(24).expect("opus encoder");
        let mic = Box::new(audio::synthetic::SpeechLike::new());
        audio::spawn_audio(mic, encoder, aux_tx.clone(), cancel.clone()).expect("audio thread")
    });
    let (state_tx, state) = watch::channel(LinkState::Connecting { attempt: 0 });
    let endpoint = offline_endpoint(key.clone()).await;
    let opts = UplinkOptions {
        server,
        name: name.into(),
        format,
        bitrate_kbps: 300,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        reboot_command: Vec::new(),
        links: None,
        audio: audio.as_ref().map(|a| a.info),
        // A replayed stream has a fixed bitrate.
        abr: false,
        congestion: Default::default(),
    };
    let io = UplinkIo {
        frames: capture.frames,
        aux: aux_rx,
        control: capture.control,
        state: state_tx,
        store: None,
        tier: capture.tier,
        status: watch::channel(Default::default()).0,
        updates: None,
    };
    let mut io = io;
    if let Some((cfg, reboot_command, out)) = updates {
        let dir = cfg.dir.clone().expect("update.dir set by the test");
        let (updater, _task) = kodama_firmware::update::spawn(
            cfg,
            dir,
            kodama_firmware::update::UpdaterIo {
                link: state.clone(),
                events: Some(aux_tx.clone()),
                reboot_command,
            },
            cancel.clone(),
        )
        .expect("updater starts");
        io.updates = Some(updater.clone());
        *out = Some(updater);
    }
    let mut backlog = None;
    if let Some(dir) = backlog_dir {
        let cfg = BacklogConfig {
            dir: Some(dir.to_owned()),
            max_mb: 64,
            upload_kbps: 4_000,
            ..BacklogConfig::default()
        };
        let (b, recovery) = Backlog::open(&cfg).expect("backlog opens");
        eprintln!("camera {name}: backlog recovered {recovery:?}");
        backlog = Some(b.status());
        io.store = Some(StoreForward::new(b, &cfg));
    }
    let uplink = tokio::spawn(uplink::run(endpoint.clone(), opts, io, cancel.clone()));
    TestCamera {
        key,
        name: name.into(),
        sent,
        state,
        aux: aux_tx,
        cancel,
        endpoint,
        backlog,
        uplink,
    }
}

impl TestCamera {
    /// Waits (bounded) until the uplink is streaming.
    pub async fn wait_streaming(&mut self, within: Duration) {
        tokio::time::timeout(within, self.state.wait_for(|s| *s == LinkState::Streaming))
            .await
            .expect("camera streams in time")
            .expect("state channel");
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

/// Connects a viewer to camera `name`, retrying while the camera is unknown.
pub async fn viewer(server: &TestServer, name: &str) -> (ViewerClient, Endpoint) {
    let key = SecretKey::generate();
    server.allow(&key, PeerRole::Viewer);
    let ep = offline_endpoint(key).await;
    for _ in 0..50 {
        match ViewerClient::connect(&ep, server.dial_addr(), CameraSelector::Name(name.into()))
            .await
        {
            Ok(c) => return (c, ep),
            Err(e) => {
                tracing::info!("viewer retry: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("viewer could not connect to {name}");
}

/// ffprobe's view of the first video stream of `path` (codec, size, frames
/// counted by decoding), or `None` where ffprobe is not installed. CI
/// installs it (scripts/install-deps.sh); there a missing ffprobe fails.
pub fn probe_video(path: &std::path::Path) -> Option<serde_json::Value> {
    if std::process::Command::new("ffprobe")
        .arg("-version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "CI must have ffprobe");
        eprintln!("SKIPPED: ffprobe not installed (apt-get install ffmpeg)");
        return None;
    }
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        probe.stderr.is_empty(),
        "ffprobe complains: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("json");
    Some(v["streams"][0].clone())
}

/// A UDP "cable" between peers on loopback that the test can cut: packets
/// in either direction vanish silently, as when a process is killed or a
/// link fails with nothing announcing it. Clients dial [`UdpCable::addr`].
pub struct UdpCable {
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes from the target still carried before the cable cuts itself
    /// (negative: no limit).
    budget: Arc<std::sync::atomic::AtomicI64>,
    stop: CancellationToken,
}

impl UdpCable {
    /// Forwards datagrams between clients of the returned address and `target`.
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind cable"),
        );
        let addr = front.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(std::sync::atomic::AtomicI64::new(-1));
        let stop = CancellationToken::new();
        tokio::spawn({
            let cut = cut.clone();
            let budget = budget.clone();
            let stop = stop.clone();
            async move {
                // One upstream socket per client, so the target sees distinct peers.
                let mut upstream: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let received = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = front.recv_from(&mut buf) => r,
                    };
                    let Ok((n, from)) = received else {
                        return;
                    };
                    if cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    let up = match upstream.get(&from) {
                        Some(s) => s.clone(),
                        None => {
                            let s = Arc::new(
                                tokio::net::UdpSocket::bind("127.0.0.1:0")
                                    .await
                                    .expect("bind upstream"),
                            );
                            upstream.insert(from, s.clone());
                            let (front, cut, s2) = (front.clone(), cut.clone(), s.clone());
                            let budget = budget.clone();
                            let stop = stop.clone();
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 65536];
                                loop {
                                    let n = tokio::select! {
                                        _ = stop.cancelled() => return,
                                        r = s2.recv(&mut buf) => match r { Ok(n) => n, Err(_) => return },
                                    };
                                    if budget.load(Ordering::Relaxed) >= 0
                                        && budget.fetch_sub(n as i64, Ordering::Relaxed) < n as i64
                                    {
                                        budget.store(-1, Ordering::Relaxed);
                                        cut.store(true, Ordering::Relaxed);
                                    }
                                    if !cut.load(Ordering::Relaxed) {
                                        let _ = front.send_to(&buf[..n], from).await;
                                    }
                                }
                            });
                            s.connect(target).await.expect("connect upstream");
                            s
                        }
                    };
                    let _ = up.send(&buf[..n]).await;
                }
            }
        });
        Self {
            addr,
            cut,
            budget,
            stop,
        }
    }

    /// Cuts the cable by itself once `bytes` more have come from the target.
    pub fn cut_after(&self, bytes: i64) {
        self.budget
            .store(bytes.max(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops everything from now on, silently.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Carries packets again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpCable {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The server's address as reached through `cable`.
pub fn dial_via(server: &TestServer, cable: &UdpCable) -> EndpointAddr {
    EndpointAddr::new(server.server.node.endpoint().id()).with_ip_addr(cable.addr)
}

/// The server's index in `data_dir` and the camera with `key`'s row in it.
pub fn open_index(
    data_dir: &std::path::Path,
    key: &SecretKey,
) -> (kodama_server::db::Db, kodama_server::db::CameraRow) {
    let db = kodama_server::db::Db::open(&data_dir.join("kodama.db")).expect("index");
    let endpoint = key.public().to_string();
    let cam = db
        .cameras()
        .expect("cameras")
        .into_iter()
        .find(|c| c.endpoint == endpoint)
        .expect("camera indexed");
    (db, cam)
}

/// The audio in the camera's backfilled segments: the wall time of every
/// Opus packet, and the largest distance between a fragment's video and
/// audio start (seconds).
pub fn backfilled_audio(data_dir: &std::path::Path, key: &SecretKey) -> (Vec<i64>, f64) {
    let (db, cam) = open_index(data_dir, key);
    let mut times = Vec::new();
    let mut worst_offset_s = 0f64;
    let segs = db.segments_between(cam.id, 0, i64::MAX).expect("segments");
    for seg in segs.iter().filter(|s| s.backfill) {
        let path = data_dir.join("recordings").join(&seg.path);
        let bytes = std::fs::read(&path).expect("segment file");
        let scan = kodama_media::fmp4::scan_segment(&bytes).expect("segment parses");
        assert!(
            scan.init.audio.is_some(),
            "backfilled segment {} has an audio track",
            seg.path
        );
        for f in &scan.fragments {
            let Some(run) = &f.audio else { continue };
            let video_s = f.header.base_decode_time as f64 / 90_000.0;
            let audio_s = run.base_decode_time as f64 / 48_000.0;
            worst_offset_s = worst_offset_s.max((audio_s - video_s).abs());
            let mut t = run.base_decode_time;
            for sample in &run.samples {
                times.push(seg.start_us + (t as i64 * 1_000_000 / 48_000));
                t += u64::from(sample.duration);
            }
        }
    }
    (times, worst_offset_s)
}

/// How much of an outage's sound a recording holds ([`assert_outage_audio`]).
pub struct OutageAudio {
    /// Opus packets recorded with a capture time inside the outage.
    pub in_outage: usize,
    /// Packets the camera filmed in that time (one per 20 ms).
    pub expected: f64,
    /// Backfilled Opus packets of any time.
    pub backfilled: usize,
    /// The largest gap between a backfilled fragment's video and audio start.
    pub worst_offset_s: f64,
}

/// Checks that the backfilled segments in `data_dir` carry the sound of the
/// outage `[from_us, to_us)`: at least `share` of its 20 ms Opus packets
/// (polled for up to `within`, as the index commits every few seconds), and
/// no fragment whose audio starts more than 250 ms from its video.
pub async fn assert_outage_audio(
    data_dir: &std::path::Path,
    key: &SecretKey,
    (from_us, to_us): (i64, i64),
    share: f64,
    within: Duration,
) -> OutageAudio {
    let expected = (to_us - from_us) as f64 / 20_000.0;
    let deadline = tokio::time::Instant::now() + within;
    let found = loop {
        let (times, worst_offset_s) = backfilled_audio(data_dir, key);
        let in_outage = times.iter().filter(|&&t| t >= from_us && t < to_us).count();
        let found = OutageAudio {
            in_outage,
            expected,
            backfilled: times.len(),
            worst_offset_s,
        };
        if in_outage as f64 >= share * expected || tokio::time::Instant::now() >= deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        found.in_outage as f64 >= share * expected,
        "only {} of ~{expected:.0} audio packets of the outage were recorded",
        found.in_outage
    );
    assert!(
        found.worst_offset_s <= 0.25,
        "a backfilled fragment's audio starts {:.0} ms away from its video",
        found.worst_offset_s * 1000.0
    );
    found
}
