//! Fleet lifecycle over real iroh on loopback: identity is the server's
//! record, pairing with one-time codes, revocation, admins' commands.

mod common;

use std::process::Command as Process;
use std::time::{Duration, Instant};

use common::*;
use kodama_firmware::app::{self, AppHandles};
use kodama_firmware::config::Config as CameraConfig;
use kodama_net::media_recv::Received;
use kodama_net::pair::{self, PairError};
use kodama_net::SecretKey;
use kodama_proto::{CameraSelector, RejectCode, Role};
use kodama_server::allowlist::PeerRole;
use kodama_server::pairing::PairingStore;
use kodama_server::viewer::{ViewerClient, ViewerEvent};
use tokio_util::sync::CancellationToken;

/// `kodama-server` against the test server's data directory and API.
fn server_cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    Process::new(env!("CARGO_BIN_EXE_kodama-server"))
        .arg("--data-dir")
        .arg(&server.config.server.data_dir)
        .args(["--api-listen", &server.server.api_addr.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kodama-server runs")
}

/// `camera add` / `viewer add` and the pairing string it printed.
fn add_with_code(server: &TestServer, role: &str, name: &str) -> String {
    let out = server_cli(server, &[role, "add", name, "--no-qr"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{role} add: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with("kodama:pair?"))
        .unwrap_or_else(|| panic!("no pairing string in: {stdout}"))
        .to_owned()
}

/// Video frames a viewer receives within `within`, as capture times.
async fn capture_times(client: &mut ViewerClient, n: usize, within: Duration) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(ViewerEvent::Media(Received::Frame(h, f)))
                if h.channel == kodama_proto::Channel::Video =>
            {
                out.push(f.capture_us)
            }
            Ok(ViewerEvent::Closed(why)) => panic!("viewer closed: {why}"),
            Ok(_) => {}
            Err(_) => panic!("only {} of {n} frames within {within:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_claiming_another_cameras_name_cannot_take_over_its_viewers() {
    let server = TestServer::start().await;
    let (porch_key, intruder_key) = (SecretKey::generate(), SecretKey::generate());
    server.allow_camera(&porch_key, "porch");
    server.allow_camera(&intruder_key, "garage");
    let mut porch = start_camera("porch", server.dial_addr(), porch_key.clone()).await;
    porch.wait_streaming(Duration::from_secs(10)).await;
    // An allowed camera that says "porch" in its hello.
    let mut intruder = start_camera("porch", server.dial_addr(), intruder_key.clone()).await;
    intruder.wait_streaming(Duration::from_secs(10)).await;

    for attempt in 0..5 {
        let (mut client, ep) = viewer(&server, "porch").await;
        assert_eq!(
            client.camera,
            *porch_key.public().as_bytes(),
            "attempt {attempt}: `porch` is the camera the server recorded as porch"
        );
        assert_eq!(client.info.name, "porch");
        let times = capture_times(&mut client, 5, Duration::from_secs(10)).await;
        let all_from_porch = {
            let porch_sent = porch.sent.lock().expect("lock");
            times.iter().all(|t| porch_sent.contains_key(t))
        };
        assert!(
            all_from_porch,
            "attempt {attempt}: every frame came from the real porch camera"
        );
        client.close();
        ep.close().await;
    }
    // The intruder answers only to its recorded name, and its hello is ignored everywhere.
    let (client, _ep) = viewer(&server, "garage").await;
    assert_eq!(client.camera, *intruder_key.public().as_bytes());
    assert_eq!(client.info.name, "garage", "viewers see the recorded name");
    let mut names: Vec<(String, String)> = server
        .server
        .hub
        .cameras()
        .into_iter()
        .map(|c| (c.info.name, c.id.to_string()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("garage".to_owned(), intruder_key.public().to_string()),
            ("porch".to_owned(), porch_key.public().to_string()),
        ]
    );
    assert!(logged("camera calls itself by another name"));

    // An admin renames: the new name resolves, the old one no longer does.
    let out = server_cli(&server, &["camera", "rename", "garage", "shed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (client, _ep) = viewer(&server, "shed").await;
    assert_eq!(client.camera, *intruder_key.public().as_bytes());
    let key = SecretKey::generate();
    server.allow(&key, PeerRole::Viewer);
    let ep = offline_endpoint(key).await;
    let err = ViewerClient::connect(
        &ep,
        server.dial_addr(),
        CameraSelector::Name("garage".into()),
    )
    .await
    .expect_err("old name is gone");
    assert!(err.to_string().contains("no camera matches"), "{err}");
    // Two cameras can never share a name.
    let out = server_cli(&server, &["camera", "rename", "shed", "porch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));

    // The API resolves `{camera}` through the record too.
    let token = std::fs::read_to_string(&server.server.api_token).expect("token");
    let resp =
        kodama_server::api::client::get(server.server.api_addr, token.trim(), "/api/v1/cameras")
            .await
            .expect("cameras");
    let body = kodama_server::api::client::body_bytes(server.server.api_addr, resp)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let listed: Vec<(String, String)> = v["cameras"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        listed.contains(&("porch".to_owned(), porch_key.public().to_string())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("shed".to_owned(), intruder_key.public().to_string())),
        "{listed:?}"
    );
    porch.stop();
    intruder.stop();
    server.stop().await;
}

fn camera_config(dir: &std::path::Path, name: &str, pairing: &str) -> CameraConfig {
    let toml = format!(
        r#"
[camera]
name = "{name}"
key_path = "{key}"
[server]
pair = "{pairing}"
[network]
offline = true
reconnect_initial_ms = 100
reconnect_max_ms = 500
[video]
width = 160
height = 120
fps = 15
bitrate_kbps = 150
keyframe_interval = 15
[telemetry]
interval_ms = 1000
"#,
        key = dir.join("data/camera.key").display(),
    );
    let config =
        CameraConfig::from_toml(&toml, std::path::Path::new("kodama.toml")).expect("parses");
    config.validate().expect("valid");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_pairs_with_a_code_once_and_removal_cuts_it_off_at_once() {
    let server = TestServer::start().await;
    let pairing = add_with_code(&server, "camera", "porch");
    let listed = server_cli(&server, &["camera", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("waiting"));

    // The camera app pairs on first contact, then streams as "porch".
    let dir = tempfile::tempdir().expect("tempdir");
    let config = camera_config(dir.path(), "whatever-it-likes", &pairing);
    let record = config.paired_record_path();
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let camera = tokio::spawn(app::run(
        config.clone(),
        AppHandles::default(),
        cancel.clone(),
    ));
    let (mut client, _ep) = viewer(&server, "porch").await;
    capture_times(&mut client, 1, Duration::from_secs(20)).await;
    eprintln!("pairing to first frame: {:?}", started.elapsed());
    assert!(record.exists(), "the camera recorded that it paired");
    let camera_key =
        kodama_net::endpoint::load_or_create_key(&config.camera.key_path).expect("key");
    assert_eq!(
        server
            .server
            .allowlist
            .name_of(&camera_key.public(), PeerRole::Camera)
            .as_deref(),
        Some("porch")
    );
    assert!(logged("pairing attempt: paired"));

    // The same code again, from another key: refused as used, on both sides.
    let p = kodama_proto::pairing::PairingString::parse(&pairing).expect("parses");
    let other = offline_endpoint(SecretKey::generate()).await;
    let err = pair::pair(&other, server.dial_addr(), Role::Camera, &p.code, "x")
        .await
        .expect_err("used");
    assert!(
        matches!(
            err,
            PairError::Refused {
                code: RejectCode::CodeUsed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("used already"), "{err}");
    // A wrong code, and an expired one.
    let err = pair::pair(
        &other,
        server.dial_addr(),
        Role::Camera,
        "ABCD-EFGH-JKMN",
        "x",
    )
    .await
    .expect_err("wrong");
    assert!(
        matches!(
            err,
            PairError::Refused {
                code: RejectCode::WrongCode,
                ..
            }
        ),
        "{err}"
    );
    let store = PairingStore::new(server.config.pairing_path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let stale = store
        .create(
            &server.server.allowlist,
            PeerRole::Camera,
            "late",
            Duration::from_secs(60),
            now - 120,
        )
        .expect("code");
    let err = pair::pair(&other, server.dial_addr(), Role::Camera, &stale.code, "x")
        .await
        .expect_err("expired");
    assert!(
        matches!(
            err,
            PairError::Refused {
                code: RejectCode::CodeExpired,
                ..
            }
        ),
        "{err}"
    );
    // Guessing is rate-limited per key.
    let mut limited = false;
    for _ in 0..6 {
        if let Err(PairError::Refused {
            code: RejectCode::RateLimited,
            ..
        }) = pair::pair(
            &other,
            server.dial_addr(),
            Role::Camera,
            "ZZZZ-ZZZZ-ZZZZ",
            "x",
        )
        .await
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "a key that keeps guessing is slowed down");
    assert!(logged("pairing attempt refused"));

    // Removal closes the streaming camera's connection within a second.
    let removed_at = Instant::now();
    let out = server_cli(&server, &["camera", "remove", "porch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(ViewerEvent::Control(kodama_proto::Message::CameraState {
                online: false, ..
            })) => break,
            Ok(ViewerEvent::Closed(_)) => break,
            Ok(_) => {}
            Err(_) => panic!("the removed camera was still online after 1 s"),
        }
    }
    let dropped_in = removed_at.elapsed();
    eprintln!("removed camera dropped in {dropped_in:?}");
    assert!(dropped_in < Duration::from_secs(1));
    assert_eq!(server.server.sessions.count(&camera_key.public()), 0);
    // Its key can never come back: not as a camera, not by pairing again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        server.server.sessions.count(&camera_key.public()),
        0,
        "no reconnect"
    );
    let again = add_with_code(&server, "camera", "porch-again");
    let p = kodama_proto::pairing::PairingString::parse(&again).expect("parses");
    let revoked_ep = offline_endpoint(camera_key.clone()).await;
    let err = pair::pair(&revoked_ep, server.dial_addr(), Role::Camera, &p.code, "x")
        .await
        .expect_err("revoked");
    assert!(!err.is_retryable(), "{err}");
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), camera).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_pair_with_view_pair_and_commands_are_acknowledged_with_what_happened() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    let mut cam = start_camera("porch", server.dial_addr(), key.clone()).await;
    cam.wait_streaming(Duration::from_secs(10)).await;

    // A viewer on "another machine" (its own data directory) pairs once.
    let pairing = add_with_code(&server, "viewer", "phone");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let view = |extra: &[&str]| {
        Process::new(env!("CARGO_BIN_EXE_kodama-server"))
            .arg("--data-dir")
            .arg(elsewhere.path())
            .arg("--offline")
            .args(["view", "--camera", "porch", "--frames", "10", "--output"])
            .arg(elsewhere.path().join("out.h264"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .expect("view runs")
    };
    let out = view(&["--pair", &pairing]);
    assert!(
        out.status.success(),
        "view --pair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("paired with"));
    let written = std::fs::metadata(elsewhere.path().join("out.h264"))
        .expect("output")
        .len();
    assert!(written > 0, "the paired viewer received video");
    let viewers = server.server.allowlist.named().expect("list");
    assert!(viewers
        .iter()
        .any(|p| p.role == PeerRole::Viewer && p.name == "phone"));
    // The pairing is remembered: the used code is not sent again.
    let again = view(&["--pair", &pairing]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Commands go through the running server and say what the camera did.
    let out = server_cli(&server, &["camera", "keyframe", "porch"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("keyframe: ok: keyframe seq="), "{stdout}");
    let out = server_cli(&server, &["camera", "snapshot", "porch"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("snapshot seq="), "{stdout}");
    let saved = stdout
        .split("saved ")
        .nth(1)
        .map(|p| std::path::PathBuf::from(p.trim()))
        .expect("the server saved the picture");
    let picture = std::fs::read(&saved).expect("snapshot file");
    assert!(
        kodama_media::h264::is_idr(&picture),
        "the snapshot is a keyframe"
    );
    // This camera has no reboot command: it says so, and the CLI fails.
    let out = server_cli(&server, &["camera", "reboot", "porch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unsupported"));
    // Unknown and offline cameras are clear errors.
    let out = server_cli(&server, &["camera", "keyframe", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no camera named"));
    cam.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = server_cli(&server, &["camera", "keyframe", "porch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not connected"));

    // Removing the viewer revokes it: the next view is refused.
    let out = server_cli(&server, &["viewer", "remove", "phone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = view(&["--pair", &pairing]);
    assert!(!refused.status.success());
    server.stop().await;
}

/// A QR code as the luma picture a card held in front of the lens makes
/// (the server's own QR picture, `scale` pixels a module).
fn qr_picture(text: &str, scale: u32) -> kodama_firmware::video::LumaFrame {
    let image = kodama_server::pairing::qr_image(text, scale).expect("fits in a QR code");
    kodama_firmware::video::LumaFrame {
        width: image.width,
        height: image.height,
        data: image.pixels,
        capture_us: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_refused_its_configured_code_pairs_from_a_qr_code_in_front_of_its_lens() {
    let server = TestServer::start().await;
    // A code someone else redeemed already: the camera's kodama.toml has it.
    let spent = add_with_code(&server, "camera", "spent");
    let p = kodama_proto::pairing::PairingString::parse(&spent).expect("parses");
    let other = offline_endpoint(SecretKey::generate()).await;
    pair::pair(&other, server.dial_addr(), Role::Camera, &p.code, "x")
        .await
        .expect("the first use pairs");
    let dir = tempfile::tempdir().expect("tempdir");
    // The owner's QR code as a picture file, which the synthetic camera films.
    let scene = dir.path().join("yard-qr.pgm");
    let scene_arg = scene.to_str().expect("utf-8 path");
    let out = server_cli(
        &server,
        &[
            "camera",
            "add",
            "yard",
            "--no-qr",
            "--qr-image",
            scene_arg,
            "--wifi-ssid",
            "Garden Net",
            "--wifi-psk",
            "correct horse",
            "--wifi-country",
            "GB",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let pairing = stdout
        .lines()
        .find(|l| l.starts_with("kodama:pair?"))
        .expect("pairing string")
        .to_owned();
    assert!(stdout.contains("QR code picture"), "{stdout}");
    // Bad options are clear errors.
    let nowhere = dir.path().join("no/such/dir/qr.pgm");
    let out = server_cli(
        &server,
        &[
            "camera",
            "add",
            "gate",
            "--no-qr",
            "--qr-image",
            nowhere.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("writing the QR code picture"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server_cli(&server, &["camera", "add", "gate", "--expires", "2x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unit must be s, m, h or d"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server_cli(
        &server,
        &["camera", "add", "gate", "--no-qr", "--expires", "2s"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid for 2 s, once"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let picture = kodama_media::pgm::GreyImage::from_pgm(&std::fs::read(&scene).expect("written"))
        .expect("a PGM picture");
    let decoded = kodama_firmware::onboarding::decode_qr(&kodama_firmware::video::LumaFrame {
        width: picture.width,
        height: picture.height,
        data: picture.pixels,
        capture_us: 0,
    });
    assert_eq!(
        decoded,
        vec![pairing.clone()],
        "the picture holds the pairing string"
    );

    let joined = dir.path().join("wifi-joined");
    let toml = format!(
        r#"
[camera]
name = "camera"
key_path = "{key}"
[server]
pair = "{spent}"
[network]
offline = true
reconnect_initial_ms = 100
reconnect_max_ms = 500
[video]
width = 320
height = 240
fps = 15
bitrate_kbps = 300
keyframe_interval = 15
synthetic_scene = "{scene}"
[system]
wifi_command = ["sh", "-c", "echo joined > '{joined}'"]
"#,
        key = dir.path().join("data/camera.key").display(),
        joined = joined.display(),
        scene = scene.display(),
    );
    let config =
        CameraConfig::from_toml(&toml, std::path::Path::new("kodama.toml")).expect("parses");
    config.validate().expect("valid");
    let handles = AppHandles::default();
    // Someone holds a QR code that is not a Kodama one over the owner's.
    handles
        .overlay
        .show(qr_picture("https://example.com/menu", 7));
    let cancel = CancellationToken::new();
    let camera = tokio::spawn(app::run(config.clone(), handles.clone(), cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    // The used code is refused; the camera stays up, unpaired, and scans.
    while !logged("the server refused the pairing code in kodama.toml") {
        assert!(Instant::now() < deadline, "the used code was refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged("used already"));
    assert!(!config.paired_record_path().exists());
    assert!(
        !camera.is_finished(),
        "a refused code does not end the camera"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logged("it is not a Kodama pairing code") {
        assert!(
            Instant::now() < deadline,
            "the foreign QR code was read and refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = Instant::now();
    handles.overlay.clear();
    let (mut client, _ep) = viewer(&server, "yard").await;
    capture_times(&mut client, 1, Duration::from_secs(20)).await;
    eprintln!("QR shown to first frame: {:?}", shown.elapsed());
    assert!(config.paired_record_path().exists());
    let wifi = std::fs::read_to_string(config.qr_wifi_path()).expect("wifi saved");
    assert!(
        wifi.contains("Garden Net") && wifi.contains("correct horse"),
        "{wifi}"
    );
    assert!(joined.exists(), "system.wifi_command ran");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(config.qr_wifi_path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the Wi-Fi passphrase is private");
    }
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), camera).await;
    server.stop().await;
}
