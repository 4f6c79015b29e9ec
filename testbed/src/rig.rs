//! A camera streaming to a server across the bed, watched by a viewer:
//! the real `kodama-server` and `kodama-camera` in their namespaces and an
//! in-process viewer in the server's namespace that timestamps every video
//! frame. Shared by the failover tests, the bench and the demo.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::media_recv::Received;
use kodama_net::{EndpointAddr, SecretKey};
use kodama_proto::{CameraSelector, Channel};
use kodama_server::viewer::{ViewerClient, ViewerEvent};
use tokio_util::sync::CancellationToken;

use crate::{in_namespace, Bed, BedError, Ns, NsChild, Profile, Uplink, SERVER_ADDR};

/// How the rig is set up.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// The camera's `network.return_after_s`.
    pub return_after_s: f64,
    /// The camera's video bitrate.
    pub bitrate_kbps: u32,
    /// Keep the server's data here (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// The camera's `video.busy_scene`: a picture that really fills the
    /// bitrate asked for (adaptive-bitrate tests).
    pub busy_scene: bool,
    /// The camera's `video.abr`.
    pub abr: bool,
    /// The camera's `network.congestion` (`bbr3`, `cubic`).
    pub congestion: &'static str,
    /// The camera's `telemetry.interval_ms` (how finely the viewer sees
    /// tier changes).
    pub telemetry_ms: u64,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self {
            return_after_s: 3.0,
            bitrate_kbps: 400,
            data_dir: None,
            busy_scene: false,
            abr: true,
            congestion: "bbr3",
            telemetry_ms: 1000,
        }
    }
}

/// One telemetry sample's `stream` document, as the viewer got it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSample {
    /// When the viewer got it.
    pub at: Instant,
    /// The adaptive-bitrate tier.
    pub tier: Option<String>,
    /// The encoder's target, kbit/s.
    pub kbps: u64,
    /// BBR's bandwidth estimate, kbit/s.
    pub estimate_kbps: Option<u64>,
    /// The uplink in use.
    pub uplink: Option<String>,
    /// The server's limit.
    pub limit: String,
}

impl StreamSample {
    fn parse(at: Instant, payload: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let s = v.get("stream")?;
        let text = |k: &str| s.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Some(StreamSample {
            at,
            tier: text("tier"),
            kbps: s.get("kbps").and_then(serde_json::Value::as_u64)?,
            estimate_kbps: s.get("estimate_kbps").and_then(serde_json::Value::as_u64),
            uplink: text("uplink"),
            limit: text("limit").unwrap_or_default(),
        })
    }
}

/// The server's port in the bed.
pub const PORT: u16 = 7070;

/// Server, camera and a viewer (in the server's namespace) in a fresh bed.
#[derive(Debug)]
pub struct Rig {
    /// The bed.
    pub bed: Bed,
    /// `kodama-server run` in the server namespace.
    pub server: NsChild,
    /// `kodama-camera` in the camera namespace.
    pub camera: NsChild,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    streams: Arc<Mutex<Vec<StreamSample>>>,
    stop_viewer: CancellationToken,
    viewer: Option<std::thread::JoinHandle<()>>,
    /// Where logs, configs and (by default) the server's data live.
    pub dir: PathBuf,
    server_bin: PathBuf,
    server_args: Vec<String>,
    restarts: u32,
    _temp: Option<tempfile::TempDir>,
}

fn run_ok(program: &Path, args: &[&str]) -> Result<String, BedError> {
    let program = program.to_string_lossy();
    let mut command = vec![program.as_ref()];
    command.extend_from_slice(args);
    Ok(crate::run(&command)?.trim().to_owned())
}

impl Rig {
    /// Builds the bed and starts server, camera and viewer.
    pub fn start(opts: &RigOptions) -> Result<Rig, BedError> {
        let (server_bin, camera_bin) = crate::workspace_binaries()?;
        let bed = Bed::up(Profile::WIFI, Profile::CELL, PORT)?;
        let temp = tempfile::tempdir().map_err(|source| BedError::Io {
            what: "temporary directory".into(),
            source,
        })?;
        let dir = temp.path().to_owned();
        let data = opts.data_dir.clone().unwrap_or_else(|| dir.join("server"));
        let data_s = data.display().to_string();
        let server_id = run_ok(&server_bin, &["--data-dir", &data_s, "id"])?;
        let conf = dir.join("camera.toml");
        std::fs::write(
            &conf,
            format!(
                r#"[camera]
name = "bedcam"
key_path = "{key}"

[server]
node_id = "{server_id}"
addrs = ["{SERVER_ADDR}:{PORT}"]

[network]
offline = true
reconnect_initial_ms = 100
reconnect_max_ms = 1000
return_after_s = {return_after}
congestion = "{congestion}"

[[network.uplinks]]
name = "wifi"
interface = "wifi0"

[[network.uplinks]]
name = "cell"
interface = "cell0"


[video]
source = "synthetic"
width = 320
height = 240
fps = 30
bitrate_kbps = {bitrate}
keyframe_interval = 30
abr = {abr}
busy_scene = {busy}

[telemetry]
interval_ms = {telemetry_ms}
"#,
                key = dir.join("camera.key").display(),
                return_after = opts.return_after_s,
                bitrate = opts.bitrate_kbps,
                congestion = opts.congestion,
                abr = opts.abr,
                busy = opts.busy_scene,
                telemetry_ms = opts.telemetry_ms,
            ),
        )
        .map_err(|source| BedError::Io {
            what: "writing the camera config".into(),
            source,
        })?;
        let conf_s = conf.display().to_string();
        let camera_id = run_ok(&camera_bin, &["--config", &conf_s, "id"])?;
        let allow = |id: &str, how: &[&str]| {
            let mut args = vec!["--data-dir", &data_s, "allow", "add", id];
            args.extend_from_slice(how);
            run_ok(&server_bin, &args)
        };
        allow(&camera_id, &["--camera", "--label", "bedcam"])?;
        let viewer_key = SecretKey::generate();
        allow(&viewer_key.public().to_string(), &["--role", "viewer"])?;
        let server_args: Vec<String> = vec![
            "--data-dir".into(),
            data_s.clone(),
            "--listen".into(),
            format!("{SERVER_ADDR}:{PORT}"),
            "--offline".into(),
            "run".into(),
        ];
        let server = bed.spawn(
            Ns::Server,
            &server_bin,
            &server_args,
            &dir.join("server.log"),
        )?;
        let camera = bed.spawn(
            Ns::Camera,
            &camera_bin,
            &["--config".into(), conf_s],
            &dir.join("camera.log"),
        )?;
        let server_id_parsed =
            endpoint::parse_endpoint_id(&server_id).map_err(|e| BedError::Command {
                command: "kodama-server id".into(),
                stderr: e.to_string(),
            })?;

        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let stop_viewer = CancellationToken::new();
        let viewer = in_namespace(&bed.ns(Ns::Server), {
            let arrivals = arrivals.clone();
            let streams = streams.clone();
            let stop = stop_viewer.clone();
            move || watch(viewer_key, server_id_parsed, arrivals, streams, stop)
        })?;
        Ok(Rig {
            bed,
            server,
            camera,
            arrivals,
            streams,
            stop_viewer,
            viewer: Some(viewer),
            dir,
            server_bin,
            server_args,
            restarts: 0,
            _temp: opts.data_dir.is_none().then_some(temp),
        })
    }

    /// Kills the server (SIGKILL: a crash, power loss) and starts it again
    /// at once, as a supervisor would; returns when it was killed.
    pub fn crash_and_restart_server(&mut self) -> Result<Instant, BedError> {
        let killed = Instant::now();
        self.server.kill();
        self.restarts += 1;
        let log = self.dir.join(format!("server-{}.log", self.restarts));
        self.server = self
            .bed
            .spawn(Ns::Server, &self.server_bin, &self.server_args, &log)?;
        Ok(killed)
    }

    /// The camera's stream documents (tier, estimate, uplink) the viewer
    /// got since `t`, oldest first.
    pub fn streams_since(&self, t: Instant) -> Vec<StreamSample> {
        self.streams.lock().map_or_else(
            |_| Vec::new(),
            |s| s.iter().filter(|x| x.at >= t).cloned().collect(),
        )
    }

    /// Waits (bounded) until a telemetry sample after `t` satisfies `pred`;
    /// returns it.
    pub fn wait_stream(
        &self,
        t: Instant,
        within: Duration,
        pred: impl Fn(&StreamSample) -> bool,
    ) -> Option<StreamSample> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.streams_since(t).into_iter().find(|s| pred(s)) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs `kodama-server ARGS…` against the running server (its admin
    /// API, in the server's namespace); returns stdout or the error.
    pub fn server_command(&self, args: &[&str]) -> Result<String, BedError> {
        let data = self.server_args[1].clone();
        let server = self.server_bin.to_string_lossy().into_owned();
        let mut command = vec![
            "ip".to_owned(),
            "netns".into(),
            "exec".into(),
            self.bed.ns(Ns::Server),
            server,
            "--data-dir".into(),
            data,
        ];
        command.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = command.iter().map(String::as_str).collect();
        Ok(crate::run(&refs)?.trim().to_owned())
    }

    /// Video frames the viewer got since `t`.
    pub fn frames_since(&self, t: Instant) -> usize {
        self.arrivals
            .lock()
            .map_or(0, |a| a.iter().filter(|x| **x >= t).count())
    }

    /// When the viewer got each video frame in `[from, to]`.
    fn arrivals_in(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.arrivals.lock().map_or_else(
            |_| Vec::new(),
            |a| {
                a.iter()
                    .copied()
                    .filter(|t| *t >= from && *t <= to)
                    .collect()
            },
        )
    }

    /// The longest pause between video frames in `[from, to]`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.arrivals_in(from, to)
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(to - from)
    }

    /// Pauses between video frames in `[from, to]` longer than `min`: when
    /// each began (relative to `from`) and how long it lasted.
    pub fn pauses(&self, from: Instant, to: Instant, min: Duration) -> Vec<(Duration, Duration)> {
        self.arrivals_in(from, to)
            .windows(2)
            .filter(|w| w[1] - w[0] > min)
            .map(|w| (w[0] - from, w[1] - w[0]))
            .collect()
    }

    /// Bytes sent and received on `uplink` over `window`.
    pub fn bytes_over(&self, uplink: Uplink, window: Duration) -> Result<u64, BedError> {
        let (tx0, rx0) = self.bed.counters(uplink)?;
        std::thread::sleep(window);
        let (tx1, rx1) = self.bed.counters(uplink)?;
        Ok((tx1 - tx0) + (rx1 - rx0))
    }

    /// Bytes sent on `uplink` over `window`.
    pub fn sent_over(&self, uplink: Uplink, window: Duration) -> Result<u64, BedError> {
        let (before, _) = self.bed.counters(uplink)?;
        std::thread::sleep(window);
        let (after, _) = self.bed.counters(uplink)?;
        Ok(after - before)
    }

    /// When the viewer got its latest video frame.
    pub fn last_frame(&self) -> Option<Instant> {
        self.arrivals.lock().ok()?.last().copied()
    }

    /// Waits (bounded) until the viewer gets a video frame after `t`; when it did.
    pub fn first_frame_after(&self, t: Instant, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let first = self
                .arrivals
                .lock()
                .ok()
                .and_then(|a| a.iter().copied().find(|x| *x > t));
            if first.is_some() {
                return first;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits (bounded) until video flows mostly over `uplink`.
    pub fn wait_streaming_over(&self, uplink: Uplink, within: Duration) -> bool {
        let other = match uplink {
            Uplink::Wifi => Uplink::Cell,
            Uplink::Cell => Uplink::Wifi,
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let (Ok((a0, _)), Ok((b0, _))) = (self.bed.counters(uplink), self.bed.counters(other))
            else {
                return false;
            };
            std::thread::sleep(Duration::from_secs(1));
            let (Ok((a1, _)), Ok((b1, _))) = (self.bed.counters(uplink), self.bed.counters(other))
            else {
                return false;
            };
            // 400 kbit/s of video is ~50 kB/s; a standby costs ~100 B/s.
            if a1 - a0 > 20_000 && b1 - b0 < 10_000 {
                return true;
            }
        }
        false
    }

    /// The last lines of the camera's and the server's logs.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- camera log ---\n{}\n--- server log ---\n{}",
            tail(&self.camera.output()),
            tail(&self.server.output())
        )
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_viewer.cancel();
        if let Some(v) = self.viewer.take() {
            let _ = v.join();
        }
        self.camera.stop(Duration::from_secs(3));
        self.server.stop(Duration::from_secs(5));
    }
}

/// The viewer: records when each video frame arrives, reconnecting if needed.
fn watch(
    key: SecretKey,
    server: kodama_net::EndpointId,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    streams: Arc<Mutex<Vec<StreamSample>>>,
    stop: CancellationToken,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(ep) = endpoint::bind(
            key,
            &EndpointOptions {
                offline: true,
                bind: Some(std::net::SocketAddr::from((SERVER_ADDR, 0))),
                alpns: Vec::new(),
            },
        )
        .await
        else {
            return;
        };
        let addr = EndpointAddr::new(server).with_ip_addr((SERVER_ADDR, PORT).into());
        // Bounded: the test stops the viewer; each attempt waits at most 30 s.
        for _ in 0..100 {
            if stop.is_cancelled() {
                break;
            }
            let client = tokio::select! {
                _ = stop.cancelled() => break,
                c = ViewerClient::connect_waiting(&ep, addr.clone(), CameraSelector::Name("bedcam".into()), Duration::from_secs(30), |_| {}) => c,
            };
            let Ok(mut client) = client else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = client.next() => e,
                };
                match event {
                    ViewerEvent::Media(Received::Frame(_, f)) if f.channel == Channel::Video => {
                        if let Ok(mut a) = arrivals.lock() {
                            a.push(Instant::now());
                        }
                    }
                    ViewerEvent::Media(Received::Frame(_, f))
                        if f.channel == Channel::Telemetry =>
                    {
                        if let (Some(s), Ok(mut all)) =
                            (StreamSample::parse(Instant::now(), &f.payload), streams.lock())
                        {
                            all.push(s);
                        }
                    }
                    ViewerEvent::Closed(_) => break,
                    _ => {}
                }
            }
            client.close();
        }
        ep.close().await;
    });
}
