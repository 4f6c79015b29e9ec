//! `kodama-server view` as a newcomer meets it, through the real binary:
//! it finds a server that listens on a specific address, it closes its iroh
//! endpoint on every path (no "Endpoint dropped without calling
//! Endpoint::close"), and a stream the server ended is an error with the
//! reason, not a quiet success.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use kodama_net::SecretKey;
use tokio::io::{AsyncBufReadExt, BufReader};

const UNGRACEFUL: &str = "Endpoint dropped without calling";

/// `kodama-server view …` against `server`'s data directory, listen address
/// and API, plus `extra` arguments.
fn view(server: &TestServer, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kodama-server"));
    cmd.arg("--data-dir")
        .arg(&server.config.server.data_dir)
        .arg("--listen")
        .arg(server.addr.to_string())
        .arg("--api-listen")
        .arg(server.server.api_addr.to_string())
        .arg("--offline")
        .arg("view")
        .args(["--stats-every", "60"])
        .args(extra)
        .env("RUST_LOG", "info,iroh=warn,noq=warn")
        .env_remove("KODAMA_SERVER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_reaches_a_specific_listen_address_closes_cleanly_and_reports_a_server_shutdown() {
    // Not 127.0.0.1: `view` used to dial loopback whatever the listen address.
    let server = TestServer::start_with(|c| {
        c.server.listen = "127.0.0.3:0".parse().expect("addr");
    })
    .await;
    assert_eq!(server.addr.ip().to_string(), "127.0.0.3");
    let key = SecretKey::generate();
    server.allow_camera(&key, "yard");
    let mut cam = start_camera("yard", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;

    // Ends at the user's --frames: success.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        view(
            &server,
            &["--camera", "yard", "--frames", "10", "--wait", "5"],
        )
        .output(),
    )
    .await
    .expect("view finishes")
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("10 video frames"), "{stderr}");
    assert!(!stderr.contains(UNGRACEFUL), "{stderr}");

    // An error path (no such camera): fails with the reason, endpoint closed.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        view(&server, &["--camera", "ghost", "--wait", "1"]).output(),
    )
    .await
    .expect("view finishes")
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no camera matches"), "{stderr}");
    assert!(!stderr.contains(UNGRACEFUL), "{stderr}");

    // The server shuts down under a watching viewer: non-zero, says why.
    let mut child = view(&server, &["--camera", "yard", "--duration", "120"])
        .spawn()
        .expect("spawn view");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("watching yard") {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the viewer starts watching: {seen}"));
    cam.stop();
    server.stop().await;
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
        }
        child.wait().await
    })
    .await
    .expect("the viewer exits once the server is gone")
    .expect("status");
    assert!(!status.success(), "{seen}");
    assert!(seen.contains("the stream ended after"), "{seen}");
    assert!(
        seen.contains("shutting down"),
        "the server's reason: {seen}"
    );
    assert!(!seen.contains(UNGRACEFUL), "{seen}");
}
