//! End-to-end over real iroh on loopback: simulated cameras → server → viewers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kodama_net::media_recv::Received;
use kodama_net::{codes, SecretKey};
use kodama_proto::{
    CameraSelector, Channel, ClientHandshake, Frame, FrameFlags, Message, StreamHeader, ALPN_CAMERA,
};
use kodama_server::allowlist::PeerRole;
use kodama_server::viewer::{ViewerClient, ViewerEvent};

/// Receives up to `n` video frames within `within`.
async fn video_frames(client: &mut ViewerClient, n: usize, within: Duration) -> Vec<Frame> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(ViewerEvent::Media(Received::Frame(h, f))) if h.channel == Channel::Video => {
                out.push(f)
            }
            Ok(ViewerEvent::Closed(reason)) => panic!("viewer closed: {reason}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

fn assert_exact_and_ordered(camera: &TestCamera, frames: &[Frame]) {
    let sent = camera.sent.lock().expect("lock");
    let mut last = None;
    for f in frames {
        let original = sent
            .get(&f.capture_us)
            .unwrap_or_else(|| panic!("{}: frame at {} was never sent", camera.name, f.capture_us));
        assert_eq!(f.payload, original.data, "{}: payload differs", camera.name);
        assert_eq!(f.is_keyframe(), original.keyframe);
        if let Some(prev) = last {
            assert!(
                f.sequence > prev,
                "{}: out of order {prev} -> {}",
                camera.name,
                f.sequence
            );
        }
        last = Some(f.sequence);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cameras_three_viewers_each_get_exact_bytes_in_order() {
    let server = TestServer::start().await;
    let mut cams = Vec::new();
    for name in ["front", "back"] {
        let key = SecretKey::generate();
        server.allow_camera(&key, name);
        let mut cam = start_camera(name, server.dial_addr(), key).await;
        cam.wait_streaming(Duration::from_secs(10)).await;
        cams.push(cam);
    }
    let mut viewers = Vec::new();
    for cam in &cams {
        for _ in 0..3 {
            viewers.push((cam.name.clone(), viewer(&server, &cam.name).await));
        }
    }
    // Every viewer reads at once, as real ones do: one left unread while the
    // others are drained would fall behind and be skipped ahead (by design).
    let readers: Vec<_> = viewers
        .into_iter()
        .map(|(name, (mut client, ep))| {
            tokio::spawn(async move {
                let frames = video_frames(&mut client, 45, Duration::from_secs(15)).await;
                (name, frames, client, ep)
            })
        })
        .collect();
    let mut viewers = Vec::new();
    for reader in readers {
        viewers.push(reader.await.expect("viewer task"));
    }
    for (name, frames, _client, _ep) in &viewers {
        assert_eq!(
            frames.len(),
            45,
            "viewer of {name} got {} frames",
            frames.len()
        );
        assert!(frames[0].is_keyframe(), "first frame is a keyframe");
        let cam = cams.iter().find(|c| &c.name == name).expect("camera");
        assert_exact_and_ordered(cam, frames);
        // Strictly consecutive: nothing was skipped for a healthy viewer.
        for w in frames.windows(2) {
            assert_eq!(
                w[1].sequence,
                w[0].sequence + 1,
                "gap for a healthy viewer of {name}"
            );
        }
    }
    for c in &cams {
        c.stop();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_viewer_starts_at_a_keyframe_at_once() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "late");
    let mut cam = start_camera("late", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    // Join mid-GOP: the GOP is 15 frames (0.5 s); wait a non-multiple.
    tokio::time::sleep(Duration::from_millis(1_170)).await;
    let (mut client, _ep) = viewer(&server, "late").await;
    let joined = Instant::now();
    let frames = video_frames(&mut client, 1, Duration::from_secs(5)).await;
    assert!(
        frames[0].is_keyframe(),
        "late joiner's first video frame is a keyframe"
    );
    assert!(
        joined.elapsed() < Duration::from_millis(500),
        "the cached GOP arrives at once, not at the next keyframe ({:?})",
        joined.elapsed()
    );
    cam.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_not_on_the_allowlist_are_refused() {
    let server = TestServer::start().await;
    // A camera nobody allowed.
    let key = SecretKey::generate();
    let stranger = key.public();
    let cam = start_camera("stranger", server.dial_addr(), key).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        server.server.hub.cameras().is_empty(),
        "refused camera never reaches the hub"
    );
    assert_ne!(
        *cam.state.borrow(),
        kodama_firmware::uplink::LinkState::Streaming
    );
    assert!(logged(&format!(
        "refused camera {stranger}: not on the allowlist"
    )));
    // A viewer nobody allowed.
    let vkey = SecretKey::generate();
    let vid = vkey.public();
    let ep = offline_endpoint(vkey).await;
    let err = ViewerClient::connect(&ep, server.dial_addr(), CameraSelector::FirstOnline)
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("allowlist"),
        "viewer sees why: {err}"
    );
    assert!(logged(&format!(
        "refused viewer {vid}: not on the allowlist"
    )));
    // A camera key does not make a viewer, nor the reverse.
    let both = SecretKey::generate();
    server.allow(&both, PeerRole::Camera);
    let ep = offline_endpoint(both).await;
    assert!(
        ViewerClient::connect(&ep, server.dial_addr(), CameraSelector::FirstOnline)
            .await
            .is_err()
    );
    cam.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_reconnects_after_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(dir.path().to_owned(), None).await;
    let port = server.addr.port();
    let key = SecretKey::generate();
    server.allow_camera(&key, "phoenix");
    let mut cam = start_camera("phoenix", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let (mut client, _ep) = viewer(&server, "phoenix").await;
    assert!(!video_frames(&mut client, 10, Duration::from_secs(5))
        .await
        .is_empty());
    server.stop().await;
    tokio::time::timeout(
        Duration::from_secs(15),
        cam.state
            .wait_for(|s| *s != kodama_firmware::uplink::LinkState::Streaming),
    )
    .await
    .expect("camera notices the server is gone")
    .expect("state");
    // Same identity, same port: what a restarted service looks like.
    let server = TestServer::start_in(dir.path().to_owned(), Some(port)).await;
    cam.wait_streaming(Duration::from_secs(20)).await;
    let (mut client, _ep) = viewer(&server, "phoenix").await;
    let frames = video_frames(&mut client, 30, Duration::from_secs(10)).await;
    assert_eq!(frames.len(), 30, "frames flow again after the restart");
    assert!(frames[0].is_keyframe());
    assert_exact_and_ordered(&cam, &frames);
    cam.stop();
    server.stop().await;
}

/// Dials as a camera, completes the handshake, then sends `garbage` on a media stream.
async fn rogue_camera(
    server: &TestServer,
    garbage: Vec<u8>,
) -> (
    kodama_net::Connection,
    kodama_net::control::ControlStream,
    kodama_net::Endpoint,
) {
    let key = SecretKey::generate();
    server.allow(&key, PeerRole::Camera);
    let ep = offline_endpoint(key).await;
    let conn = ep
        .connect(server.dial_addr(), ALPN_CAMERA)
        .await
        .expect("connects");
    let info = kodama_proto::CameraInfo {
        name: "rogue".into(),
        codec: kodama_proto::Codec::H264,
        width: 320,
        height: 240,
        fps_milli: 30_000,
        bitrate_kbps: 1,
        sps: Default::default(),
        pps: Default::default(),
        firmware: "evil".into(),
        audio: None,
    };
    let (control, _server) = kodama_net::control::ControlStream::hello(
        &conn,
        ClientHandshake::camera(info),
        Duration::from_secs(5),
    )
    .await
    .expect("welcomed");
    let mut stream = conn.open_uni().await.expect("stream");
    stream.write_all(&garbage).await.expect("write");
    let _ = stream.finish();
    (conn, control, ep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_disconnect_only_the_offender() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "good");
    let mut good = start_camera("good", server.dial_addr(), key).await;
    good.wait_streaming(Duration::from_secs(10)).await;
    let (mut client, _ep) = viewer(&server, "good").await;
    assert_eq!(
        video_frames(&mut client, 5, Duration::from_secs(5))
            .await
            .len(),
        5
    );

    // Oversized: a video frame header claiming 64 MiB.
    let mut oversized = StreamHeader {
        channel: Channel::Video,
        group: 0,
    }
    .to_array()
    .to_vec();
    oversized.extend_from_slice(&(64u32 << 20).to_be_bytes());
    oversized.extend_from_slice(&[0, FrameFlags::KEYFRAME.bits()]);
    oversized.extend_from_slice(&[0; 16]);
    // Malformed: not a Kodama stream at all.
    let garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    // A GOP that does not start with a keyframe.
    let mut no_key = StreamHeader {
        channel: Channel::Video,
        group: 0,
    }
    .to_array()
    .to_vec();
    no_key.extend_from_slice(
        &Frame {
            channel: Channel::Video,
            flags: FrameFlags::empty(),
            capture_us: 1,
            sequence: 1,
            payload: bytes::Bytes::from_static(&[0, 0, 0, 1, 0x41]),
        }
        .to_bytes()
        .expect("encodes"),
    );
    for (what, bytes) in [
        ("oversized", oversized),
        ("garbage", garbage),
        ("no keyframe", no_key),
    ] {
        let (conn, _control, _ep) = rogue_camera(&server, bytes).await;
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap_or_else(|_| panic!("{what}: the server disconnects the offender"));
        let text = reason.to_string();
        assert!(
            text.contains(&format!("{}", codes::PROTOCOL_VIOLATION))
                || text.contains("invalid media"),
            "{what}: closed with a protocol-violation reason: {text}"
        );
        // The good camera's viewer keeps streaming.
        let more = video_frames(&mut client, 10, Duration::from_secs(5)).await;
        assert_eq!(more.len(), 10, "{what}: others keep streaming");
    }
    assert!(logged("disconnecting camera"));
    assert!(logged("exceeds the 2097152-byte limit"));
    good.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_viewer_skips_to_the_live_gop_and_others_see_no_gap() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "busy");
    // Heavy enough that 3 s of stall overflows the flow-control windows
    // (1 MiB per connection): 32 KB frames at 30 fps are ~7.7 Mbit/s.
    let mut cam = start_camera_with("busy", server.dial_addr(), key, settings(), 32 * 1024).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let (mut slow, _e1) = viewer(&server, "busy").await;
    let (mut healthy, _e2) = viewer(&server, "busy").await;
    let before = video_frames(&mut slow, 5, Duration::from_secs(5)).await;
    assert_eq!(before.len(), 5);

    // The healthy viewer keeps reading while the slow one stops for 3 s.
    let healthy_task = tokio::spawn(async move {
        let frames = video_frames(&mut healthy, 150, Duration::from_secs(8)).await;
        (healthy, frames)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed_at = kodama_server::stats::now_us();
    // Drain what was already buffered client-side, then find where it landed.
    let after = video_frames(&mut slow, 60, Duration::from_secs(5)).await;
    let last_before = before.last().expect("frames").sequence;
    let skipped = after
        .windows(2)
        .map(|w| w[1].sequence.saturating_sub(w[0].sequence + 1))
        .sum::<u64>()
        + after
            .first()
            .map_or(0, |f| f.sequence.saturating_sub(last_before + 1));
    assert!(skipped > 0, "the stalled viewer skipped frames");
    let tail = after.last().expect("frames after resuming");
    assert!(
        tail.capture_us + 1_000_000 > resumed_at,
        "the stalled viewer is back on live video within a second"
    );
    // Every resumption point is a keyframe: skips land on GOP boundaries.
    for w in after.windows(2) {
        if w[1].sequence != w[0].sequence + 1 {
            assert!(w[1].is_keyframe(), "a skip lands on a keyframe");
        }
    }
    let (_healthy, frames) = healthy_task.await.expect("healthy viewer");
    assert!(
        frames.len() >= 120,
        "healthy viewer kept receiving ({})",
        frames.len()
    );
    for w in frames.windows(2) {
        assert_eq!(
            w[1].sequence,
            w[0].sequence + 1,
            "the healthy viewer saw no gap"
        );
    }
    cam.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_reaches_viewers() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "meter");
    let mut cam = start_camera("meter", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let (mut client, _ep) = viewer(&server, "meter").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    let mut n = 0u64;
    while seen.is_none() && tokio::time::Instant::now() < deadline {
        n += 1;
        let _ = cam.aux.try_send(kodama_firmware::uplink::AuxMessage {
            channel: Channel::Telemetry,
            capture_us: kodama_server::stats::now_us(),
            payload: bytes::Bytes::from(format!("{{\"sample\":{n}}}")),
        });
        if let Ok(ViewerEvent::Media(Received::Frame(h, f))) =
            tokio::time::timeout(Duration::from_millis(200), client.next()).await
        {
            if h.channel == Channel::Telemetry {
                seen = Some(f);
            }
        }
    }
    let f = seen.expect("telemetry arrived");
    assert!(String::from_utf8_lossy(&f.payload).starts_with("{\"sample\":"));
    cam.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_asking_for_an_unknown_camera_gets_a_clear_refusal() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow(&key, PeerRole::Viewer);
    let ep = offline_endpoint(key).await;
    let err = ViewerClient::connect(
        &ep,
        server.dial_addr(),
        CameraSelector::Name("ghost".into()),
    )
    .await
    .expect_err("unknown");
    assert!(err.to_string().contains("no camera matches"), "{err}");
    let _ = Message::Welcome {
        version: 1,
        server: String::new(),
    };
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_output_is_valid_h264_for_ffprobe() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "probe");
    let mut cam = start_camera("probe", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let (client, _ep) = viewer(&server, "probe").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("probe.h264");
    let written = kodama_server::viewer::watch(
        client,
        kodama_server::viewer::ViewOptions {
            output: Some(out.clone()),
            audio_output: None,
            duration: Some(Duration::from_secs(20)),
            frames: Some(90),
            stats_every: Duration::from_secs(1),
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("watch");
    assert_eq!(written, 90);
    let Some(s) = probe_video(&out) else {
        cam.stop();
        return;
    };
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(s["nb_read_frames"].as_str(), Some("90"), "{s}");
    cam.stop();
    server.stop().await;
}

/// Motion from a luma stream, whatever the sensor: replayed low-resolution
/// luma frames (a still scene, then a bright block crossing it, then still
/// again) go through the firmware's detector task (`motion::run`, as the
/// Pi's motion stream and the synthetic source feed it) into the camera's
/// event channel, over the uplink, and land in the recording's index as a
/// motion start and end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_luma_frames_become_motion_events_in_the_index() {
    use kodama_firmware::motion::{self, MotionConfig};
    use kodama_firmware::video::LumaFrame;
    use kodama_server::db::{AuxKind, Db};

    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "yard");
    let mut cam = start_camera("yard", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;

    let (luma_tx, luma_rx) = tokio::sync::mpsc::channel(4);
    let (active_tx, active) = tokio::sync::watch::channel(false);
    let detector = tokio::spawn(motion::run(
        MotionConfig::default(),
        luma_rx,
        cam.aux.clone(),
        active_tx,
        cam.cancel.clone(),
    ));
    // 10 fps on the camera's clock, ending now: 2 s still, 2 s of a 24x24
    // block moving right, 3 s still (longer than the 2 s cooldown).
    let (w, h) = (160u32, 90u32);
    let frames = 70u64;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let start_us = now_us - frames * 100_000;
    for i in 0..frames {
        let mut data = vec![40u8; (w * h) as usize];
        if (20..40).contains(&i) {
            let x0 = ((i - 20) * 6) as u32;
            for y in 30..54 {
                for x in x0..(x0 + 24).min(w) {
                    data[(y * w + x) as usize] = 220;
                }
            }
        }
        let frame = LumaFrame {
            width: w,
            height: h,
            data,
            capture_us: start_us + i * 100_000,
        };
        luma_tx.send(frame).await.expect("detector running");
    }
    drop(luma_tx);
    tokio::time::timeout(Duration::from_secs(10), detector)
        .await
        .expect("detector ends with its input")
        .expect("detector task");
    assert!(!*active.borrow(), "the event ended");

    // The server's index has both events (bounded wait: the recorder
    // commits in batches).
    let db = Db::open(&server.config.server.data_dir.join("kodama.db")).expect("db");
    let mut events = Vec::new();
    for _ in 0..100 {
        let cams = db.cameras().expect("cameras");
        if let Some(row) = cams.iter().find(|c| c.name == "yard") {
            events = db
                .aux_between(AuxKind::Event, row.id, 0, i64::MAX, 10)
                .expect("events");
            if events.len() >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.json).expect("event json");
            v["event"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["motion_start", "motion_end"], "{events:?}");
    cam.stop();
    server.stop().await;
}
