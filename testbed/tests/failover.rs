//! Wi-Fi ↔ cellular failover over real iroh, with the real `kodama-server`
//! and `kodama-camera` binaries running in the test bed's namespaces.
//! Needs root (network namespaces); skipped without it, except under CI.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::media_recv::Received;
use kodama_net::{EndpointAddr, SecretKey};
use kodama_proto::{CameraSelector, Channel};
use kodama_server::viewer::{ViewerClient, ViewerEvent};
use kodama_testbed::{
    in_namespace, root_or_skip, Bed, Cut, Ns, NsChild, Profile, Uplink, SERVER_ADDR,
};
use tokio_util::sync::CancellationToken;

const PORT: u16 = 7070;

/// Server, camera and a viewer (in the server's namespace) in a fresh bed.
struct Rig {
    bed: Bed,
    server: NsChild,
    camera: NsChild,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop_viewer: CancellationToken,
    viewer: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Rig {
    fn start() -> Rig {
        let (server_bin, camera_bin) =
            kodama_testbed::workspace_binaries("debug").expect("binaries build");
        let bed = Bed::up(Profile::WIFI, Profile::CELL, PORT).expect("test bed");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("server");
        let data_s = data.display().to_string();
        let server_id = run_ok(&server_bin, &["--data-dir", &data_s, "id"]);
        let conf = dir.path().join("camera.toml");
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
return_after_s = 3

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
bitrate_kbps = 400
keyframe_interval = 30
"#,
                key = dir.path().join("camera.key").display()
            ),
        )
        .expect("camera config");
        let conf_s = conf.display().to_string();
        let camera_id = run_ok(&camera_bin, &["--config", &conf_s, "id"]);
        run_ok(
            &server_bin,
            &[
                "--data-dir",
                &data_s,
                "allow",
                "add",
                &camera_id,
                "--camera",
                "--label",
                "bedcam",
            ],
        );
        let viewer_key = SecretKey::generate();
        run_ok(
            &server_bin,
            &[
                "--data-dir",
                &data_s,
                "allow",
                "add",
                &viewer_key.public().to_string(),
                "--role",
                "viewer",
            ],
        );
        let listen = format!("{SERVER_ADDR}:{PORT}");
        let server = bed
            .spawn(
                Ns::Server,
                &server_bin,
                &[
                    "--data-dir".into(),
                    data_s.clone(),
                    "--listen".into(),
                    listen,
                    "--offline".into(),
                    "run".into(),
                ],
                &dir.path().join("server.log"),
            )
            .expect("server starts");
        let camera = bed
            .spawn(
                Ns::Camera,
                &camera_bin,
                &["--config".into(), conf_s],
                &dir.path().join("camera.log"),
            )
            .expect("camera starts");
        let server_key = std::fs::read(data.join("server.key")).expect("server key");
        let server_id_parsed = endpoint::parse_endpoint_id(&server_id).expect("id");
        assert_eq!(server_key.len(), 32);

        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop_viewer = CancellationToken::new();
        let viewer = in_namespace(&bed.ns(Ns::Server), {
            let arrivals = arrivals.clone();
            let stop = stop_viewer.clone();
            move || watch(viewer_key, server_id_parsed, arrivals, stop)
        })
        .expect("viewer thread");
        Rig {
            bed,
            server,
            camera,
            arrivals,
            stop_viewer,
            viewer: Some(viewer),
            _dir: dir,
        }
    }

    fn frames_since(&self, t: Instant) -> usize {
        self.arrivals
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| **a >= t)
            .count()
    }

    /// The longest pause between video frames in `[from, to]`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let a = self.arrivals.lock().expect("lock");
        let window: Vec<Instant> = a
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        window
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(to - from)
    }

    /// Bytes sent on `uplink` over `window`.
    fn sent_over(&self, uplink: Uplink, window: Duration) -> u64 {
        let (before, _) = self.bed.counters(uplink).expect("counters");
        std::thread::sleep(window);
        let (after, _) = self.bed.counters(uplink).expect("counters");
        after - before
    }

    /// Waits (bounded) until video flows mostly over `uplink`.
    fn wait_streaming_over(&self, uplink: Uplink, within: Duration) -> bool {
        let other = match uplink {
            Uplink::Wifi => Uplink::Cell,
            Uplink::Cell => Uplink::Wifi,
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let (a0, _) = self.bed.counters(uplink).expect("counters");
            let (b0, _) = self.bed.counters(other).expect("counters");
            std::thread::sleep(Duration::from_secs(1));
            let (a1, _) = self.bed.counters(uplink).expect("counters");
            let (b1, _) = self.bed.counters(other).expect("counters");
            // 400 kbit/s of video is ~50 kB/s; a standby costs ~100 B/s.
            if a1 - a0 > 20_000 && b1 - b0 < 10_000 {
                return true;
            }
        }
        false
    }

    fn diagnostics(&self) -> String {
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
                        arrivals.lock().expect("lock").push(Instant::now());
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

#[test]
fn wifi_cut_both_ways_fails_over_to_cellular_and_back() {
    if !root_or_skip("wifi_cut_both_ways_fails_over_to_cellular_and_back") {
        return;
    }
    let rig = Rig::start();
    assert!(
        rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(30)),
        "the camera streams over Wi-Fi first\n{}",
        rig.diagnostics()
    );
    for cut in [Cut::LinkDown, Cut::Blackhole] {
        let t_cut = Instant::now();
        rig.bed.cut(Uplink::Wifi, cut).expect("cut");
        assert!(
            rig.wait_streaming_over(Uplink::Cell, Duration::from_secs(15)),
            "{cut:?}: video moves to cellular\n{}",
            rig.diagnostics()
        );
        let resumed = Instant::now();
        assert!(
            rig.frames_since(t_cut + Duration::from_secs(1)) > 0,
            "{cut:?}: the viewer gets video again\n{}",
            rig.diagnostics()
        );
        let gap = rig.longest_gap(t_cut - Duration::from_millis(500), resumed);
        eprintln!(
            "{cut:?}: longest pause at the viewer {:.0} ms",
            gap.as_secs_f64() * 1000.0
        );
        // Functional bound (the bench measures): far below a reconnect.
        assert!(
            gap < Duration::from_secs(5),
            "{cut:?}: paused {gap:?}\n{}",
            rig.diagnostics()
        );
        // A cut link carries nothing; the cellular one now carries video.
        let on_cell = rig.sent_over(Uplink::Cell, Duration::from_secs(1));
        assert!(on_cell > 20_000, "{cut:?}: {on_cell} bytes/s on cellular");

        rig.bed.restore(Uplink::Wifi, cut).expect("restore");
        assert!(
            rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(30)),
            "{cut:?}: back on Wi-Fi once it has been healthy for a while\n{}",
            rig.diagnostics()
        );
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            rig.frames_since(t) > 15,
            "{cut:?}: video flows after moving back"
        );
    }
    let log = rig.camera.output();
    assert!(
        log.contains("failing over"),
        "the camera logged the failover\n{}",
        rig.diagnostics()
    );
    assert!(
        log.contains("moving back"),
        "the camera logged moving back\n{}",
        rig.diagnostics()
    );
}
