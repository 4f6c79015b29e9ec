//! Firmware updates over real iroh on loopback: `kodama-server camera
//! update` delivers a bundle over the camera's own connection, resumes after
//! a cut, refuses a bundle whose BLAKE3 hash does not match, installs it,
//! reboots, and commits only after the new slot streamed (the health gate);
//! only an admin may start one.
//!
//! RAUC itself cannot run here (no A/B slots, no U-Boot environment on a
//! test machine): the camera runs a fake `rauc` script that logs its calls,
//! prints RAUC's progress lines, and on `install` "switches the slot" by
//! rewriting the kernel command line and version files the firmware reads.
//! Real RAUC (signature checks, slot writes, boot counting) is exercised by
//! scripts/update-check.sh and the emulated boot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use common::*;
use kodama_firmware::update::{UpdateConfig, Updater};
use kodama_net::SecretKey;
use kodama_proto::UpdatePhase;

fn server_cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    cli(server).args(args).output().expect("kodama-server runs")
}

fn cli(server: &TestServer) -> Process {
    let mut p = Process::new(env!("CARGO_BIN_EXE_kodama-server"));
    p.arg("--data-dir")
        .arg(&server.config.server.data_dir)
        .args(["--api-listen", &server.server.api_addr.to_string()])
        .env("RUST_LOG", "warn");
    p
}

/// A camera's "machine": its update directory, its fake `rauc`, and the
/// files standing in for the kernel command line and the image version.
struct Machine {
    dir: PathBuf,
}

impl Machine {
    fn new(root: &Path) -> Self {
        let dir = root.to_owned();
        std::fs::create_dir_all(dir.join("update")).expect("dir");
        std::fs::write(dir.join("cmdline"), "console=ttyAMA0 rauc.slot=A\n").expect("cmdline");
        std::fs::write(dir.join("version"), "1.0.0\n").expect("version");
        let rauc = dir.join("rauc");
        std::fs::write(
            &rauc,
            format!(
                r#"#!/bin/sh
# Fake rauc (test equipment): logs its calls; install prints RAUC-like
# progress and makes the next "boot" run slot B with version 2.0.0.
echo "$*" >> "{d}/rauc.log"
case "$1" in
install)
    echo "installing"
    echo "  0% Installing"
    echo " 40% Copying image to rootfs.1"
    echo "100% Installing done."
    cp "$2" "{d}/slot-b"
    echo "console=ttyAMA0 rauc.slot=B" > "{d}/cmdline.next"
    echo "2.0.0" > "{d}/version.next"
    ;;
status) ;;
*) echo "unknown command $1" >&2; exit 1 ;;
esac
"#,
                d = dir.display()
            ),
        )
        .expect("fake rauc");
        let reboot = dir.join("reboot");
        std::fs::write(
            &reboot,
            format!("#!/bin/sh\ntouch \"{}/rebooted\"\n", dir.display()),
        )
        .expect("fake reboot");
        for f in [&rauc, &reboot] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Self { dir }
    }

    fn config(&self) -> UpdateConfig {
        UpdateConfig {
            rauc_command: vec![self.dir.join("rauc").display().to_string()],
            dir: Some(self.dir.join("update")),
            commit_after_s: 1.0,
            trial_timeout_s: 60.0,
            cmdline: self.dir.join("cmdline"),
            version_file: self.dir.join("version"),
        }
    }

    fn reboot_command(&self) -> Vec<String> {
        vec![self.dir.join("reboot").display().to_string()]
    }

    fn rauc_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rauc.log")).unwrap_or_default()
    }

    /// What the boot loader does at the reboot: the other slot comes up.
    fn boot_other_slot(&self) {
        for f in ["cmdline", "version"] {
            std::fs::rename(self.dir.join(format!("{f}.next")), self.dir.join(f))
                .expect("the install prepared the other slot");
        }
    }
}

async fn wait_phase(updater: &Updater, phase: UpdatePhase, within: Duration) -> String {
    let mut status = updater.status();
    let found = tokio::time::timeout(within, status.wait_for(|s| s.phase == phase)).await;
    match found {
        Ok(Ok(s)) => s.detail.clone(),
        _ => panic!(
            "the camera did not reach {phase:?} within {within:?}; it is at {:?}",
            updater.status().borrow()
        ),
    }
}

fn bundle_bytes(len: usize) -> Vec<u8> {
    // Incompressible, like a squashfs.
    let mut v = vec![0u8; len];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_resumes_after_a_cut_installs_reboots_and_commits_once_healthy() {
    let server = TestServer::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let machine = Machine::new(&work.path().join("camera"));
    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    let cable = UdpCable::start(server.addr).await;
    let (mut cam, updater) = start_camera_updating(
        "porch",
        dial_via(&server, &cable),
        key.clone(),
        machine.config(),
        machine.reboot_command(),
    )
    .await;
    cam.wait_streaming(Duration::from_secs(10)).await;

    let size = 3 * 1024 * 1024;
    let bundle = work.path().join("v2.raucb");
    std::fs::write(&bundle, bundle_bytes(size)).expect("bundle");
    // The link dies silently after about a third of the bundle.
    cable.cut_after(1024 * 1024);
    let follow = cli(&server)
        .args(["camera", "update", "porch"])
        .arg(&bundle)
        .args(["--timeout", "2m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("camera update runs");

    // The camera notices the dead link, keeps what it got, and reconnects
    // once the cable carries packets again.
    tokio::time::timeout(
        Duration::from_secs(20),
        cam.state
            .wait_for(|s| !matches!(s, kodama_firmware::uplink::LinkState::Streaming)),
    )
    .await
    .expect("the camera notices the cut")
    .expect("state");
    let held = updater.status().borrow().progress;
    assert!(
        held > 0 && held < size as u64,
        "part of the bundle arrived before the cut: {held}"
    );
    cable.restore();
    let detail = wait_phase(&updater, UpdatePhase::Rebooting, Duration::from_secs(60)).await;
    assert!(detail.contains("slot A"), "{detail}");
    assert!(
        logged("sending the firmware bundle") && resumed_from_nonzero(),
        "the second delivery resumed where the camera's copy ended"
    );
    assert_eq!(
        std::fs::read(machine.dir.join("slot-b")).expect("installed"),
        std::fs::read(&bundle).expect("bundle"),
        "rauc installed exactly the bundle"
    );
    // The reboot command runs just after the report has gone out.
    for _ in 0..50 {
        if machine.dir.join("rebooted").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(machine.dir.join("rebooted").exists(), "the camera rebooted");
    assert!(
        machine
            .rauc_log()
            .lines()
            .any(|l| l.starts_with("install ")),
        "{}",
        machine.rauc_log()
    );

    // The reboot: the camera comes back on slot B, on trial.
    cam.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), cam.uplink).await;
    cam.endpoint.close().await;
    machine.boot_other_slot();
    let marks_before = machine.rauc_log().matches("status mark-good").count();
    let (mut cam, updater) = start_camera_updating(
        "porch",
        server.dial_addr(),
        key.clone(),
        machine.config(),
        machine.reboot_command(),
    )
    .await;
    let detail = wait_phase(&updater, UpdatePhase::Booted, Duration::from_secs(10)).await;
    assert!(detail.contains("version 2.0.0 on slot B"), "{detail}");
    // Not marked good before it has streamed for commit_after_s.
    assert_eq!(
        machine.rauc_log().matches("status mark-good").count(),
        marks_before
    );
    cam.wait_streaming(Duration::from_secs(10)).await;
    wait_phase(&updater, UpdatePhase::Committed, Duration::from_secs(10)).await;
    assert_eq!(
        machine.rauc_log().matches("status mark-good").count(),
        marks_before + 1
    );

    let out = tokio::task::spawn_blocking(move || follow.wait_with_output())
        .await
        .expect("join")
        .expect("camera update ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("update committed"), "{stdout}");
    let status = server_cli(&server, &["camera", "status", "porch"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("online:  yes"), "{text}");
    assert!(text.contains("running: version 2.0.0 on slot B"), "{text}");
    // Phases seconds apart all reach the server; the quick ones between
    // (verified, installing) may coalesce in the status (the camera's
    // events keep every one).
    for phase in ["receiving", "booted", "committed"] {
        assert!(text.contains(phase), "history lacks {phase}: {text}");
    }
    cam.stop();
    server.stop().await;
}

/// The server logged a delivery that started past byte 0.
fn resumed_from_nonzero() -> bool {
    let logs = logs()
        .lock()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    logs.unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sending the firmware bundle"))
        .any(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("from="))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_whose_hash_does_not_match_is_refused_and_never_installed() {
    let server = TestServer::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let machine = Machine::new(&work.path().join("camera"));
    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    let bundle = work.path().join("v2.raucb");
    std::fs::write(&bundle, bundle_bytes(256 * 1024)).expect("bundle");
    // Stored while the camera is away…
    let out = server_cli(
        &server,
        &[
            "camera",
            "update",
            "porch",
            bundle.to_str().expect("utf-8"),
            "--no-wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // …then corrupted on the server's disk: the camera must notice.
    let stored = std::fs::read_dir(server.config.server.data_dir.join("updates"))
        .expect("updates dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "raucb"))
        .expect("stored bundle");
    let mut bytes = std::fs::read(&stored).expect("read");
    bytes[1000] ^= 0xFF;
    std::fs::write(&stored, bytes).expect("corrupt");

    let (mut cam, updater) = start_camera_updating(
        "porch",
        server.dial_addr(),
        key,
        machine.config(),
        machine.reboot_command(),
    )
    .await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let detail = wait_phase(&updater, UpdatePhase::Failed, Duration::from_secs(30)).await;
    assert!(detail.contains("BLAKE3 mismatch"), "{detail}");
    assert!(
        !machine.rauc_log().contains("install"),
        "rauc never saw it: {}",
        machine.rauc_log()
    );
    assert!(!machine.dir.join("update/bundle.part").exists(), "deleted");
    let status = server_cli(&server, &["camera", "status", "porch"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("failed") && text.contains("BLAKE3 mismatch"),
        "{text}"
    );
    cam.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_may_start_an_update() {
    use kodama_server::web::accounts::{Accounts, Role};
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    let accounts = Accounts::open(&server.config.server.data_dir).expect("accounts");
    let viewer = accounts
        .create("watcher", Role::Viewer, "a long enough password")
        .expect("viewer account");
    let (token, session) = accounts.start_session(&viewer).expect("session");
    let addr = server.server.api_addr;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post("/api/v1/cameras/porch/update")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ORIGIN, format!("http://{addr}"))
        .header(hyper::header::COOKIE, format!("kodama_session={token}"))
        .header("x-csrf-token", session.csrf)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"not for you",
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    assert_eq!(resp.status(), hyper::StatusCode::FORBIDDEN);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("admin_only"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        !server.config.server.data_dir.join("updates").exists(),
        "nothing was stored"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_slot_that_never_reaches_the_server_reboots_and_the_old_slot_reports_the_rollback() {
    let server = TestServer::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let machine = Machine::new(&work.path().join("camera"));
    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    // As after an install on slot A: the record, and slot B booting.
    std::fs::write(
        machine.dir.join("update/pending.json"),
        format!(
            r#"{{"hash":"{}","from_slot":"A","from_version":"1.0.0"}}"#,
            "ab".repeat(32)
        ),
    )
    .expect("pending");
    std::fs::write(machine.dir.join("cmdline"), "rauc.slot=B\n").expect("cmdline");
    std::fs::write(machine.dir.join("version"), "2.0.0\n").expect("version");
    let mut cfg = machine.config();
    cfg.trial_timeout_s = 1.0;
    // The new version cannot reach the server: nothing listens there.
    let nowhere = kodama_net::EndpointAddr::new(server.server.node.endpoint().id())
        .with_ip_addr("127.0.0.1:9".parse().expect("addr"));
    let (cam, updater) = start_camera_updating(
        "porch",
        nowhere,
        key.clone(),
        cfg.clone(),
        machine.reboot_command(),
    )
    .await;
    wait_phase(&updater, UpdatePhase::Booted, Duration::from_secs(5)).await;
    let detail = wait_phase(&updater, UpdatePhase::Rebooting, Duration::from_secs(10)).await;
    assert!(detail.contains("falls back"), "{detail}");
    for _ in 0..50 {
        if machine.dir.join("rebooted").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(machine.dir.join("rebooted").exists(), "the trial gave up");
    assert!(
        !machine.rauc_log().contains("mark-good"),
        "never marked good: {}",
        machine.rauc_log()
    );
    cam.stop();
    cam.endpoint.close().await;

    // U-Boot's counter ran out: slot A boots again and says so.
    std::fs::write(machine.dir.join("cmdline"), "rauc.slot=A\n").expect("cmdline");
    std::fs::write(machine.dir.join("version"), "1.0.0\n").expect("version");
    let (mut cam, updater) = start_camera_updating(
        "porch",
        server.dial_addr(),
        key,
        machine.config(),
        machine.reboot_command(),
    )
    .await;
    let detail = wait_phase(&updater, UpdatePhase::RolledBack, Duration::from_secs(5)).await;
    assert!(
        detail.contains("back on version 1.0.0 on slot A"),
        "{detail}"
    );
    assert!(!machine.dir.join("update/pending.json").exists());
    cam.wait_streaming(Duration::from_secs(10)).await;
    cam.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_job_survives_server_restarts_and_ends_in_the_status() {
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(data.path().to_owned(), None).await;
    let port = server.addr.port();
    let machine = Machine::new(&work.path().join("camera"));
    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    let bundle = work.path().join("v2.raucb");
    std::fs::write(&bundle, bundle_bytes(256 * 1024)).expect("bundle");
    // The camera is away while the admin starts the update.
    let out = server_cli(
        &server,
        &[
            "camera",
            "update",
            "porch",
            &bundle.display().to_string(),
            "--no-wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;

    // Restarted: the job is still there and goes out when the camera comes.
    let server = TestServer::restart_in(data.path().to_owned(), port).await;
    let (cam, updater) = start_camera_updating(
        "porch",
        server.dial_addr(),
        key.clone(),
        machine.config(),
        machine.reboot_command(),
    )
    .await;
    wait_phase(&updater, UpdatePhase::Rebooting, Duration::from_secs(30)).await;
    // Wait (bounded) until the server has recorded the last phase, then
    // the camera "reboots".
    let mut recorded = String::new();
    for _ in 0..50 {
        recorded =
            String::from_utf8_lossy(&server_cli(&server, &["camera", "status", "porch"]).stdout)
                .into_owned();
        if recorded.contains("update:  rebooting") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded.contains("update:  rebooting"), "{recorded}");
    cam.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), cam.uplink).await;
    cam.endpoint.close().await;
    server.stop().await;

    // Restarted again while the camera reboots into the new slot: the
    // server still knows the job, so the commit lands in its status.
    let server = TestServer::restart_in(data.path().to_owned(), port).await;
    machine.boot_other_slot();
    let (mut cam, updater) = start_camera_updating(
        "porch",
        server.dial_addr(),
        key,
        machine.config(),
        machine.reboot_command(),
    )
    .await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    wait_phase(&updater, UpdatePhase::Committed, Duration::from_secs(15)).await;
    let mut text = String::new();
    for _ in 0..50 {
        text = String::from_utf8_lossy(&server_cli(&server, &["camera", "status", "porch"]).stdout)
            .into_owned();
        if text.contains("update:  committed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("update:  committed"), "{text}");
    assert!(text.contains("running: version 2.0.0 on slot B"), "{text}");
    for phase in ["receiving", "rebooting", "booted", "committed"] {
        assert!(text.contains(phase), "history lacks {phase}: {text}");
    }
    cam.stop();
    server.stop().await;
}
