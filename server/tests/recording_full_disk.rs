//! A full disk: the recorder's data directory is a 4 MiB tmpfs, far smaller
//! than what the camera sends. The recorder deletes oldest recordings and
//! keeps recording, never panics, keeps draining its feed (so the hub never
//! waits on it and live viewers are unaffected), and the API keeps answering.
//!
//! Needs root to mount the tmpfs (CI runs as root); without it the test says
//! so and checks nothing else.

mod recording_support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kodama_server::api::{self, ApiConfig, ApiState, CameraStatus};
use kodama_server::feed;
use kodama_server::recorder::{Recorder, RecorderConfig, SimulatedClock};
use recording_support::*;
use tokio_util::sync::CancellationToken;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_keeps_recording_and_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!(
            "SKIPPED full_disk_keeps_recording_and_serving: cannot mount a tmpfs (needs root)"
        );
        return;
    }
    let _mount = Mount(dir.path().to_owned());

    let clock = Arc::new(SimulatedClock::new(1_750_000_000_000_000));
    let cfg = RecorderConfig {
        data_dir: dir.path().to_owned(),
        ..RecorderConfig::default()
    };
    let rec = Recorder::open(cfg, clock.clone()).expect("open");
    let stats = rec.stats();
    let api_state = ApiState::open(
        dir.path(),
        &ApiConfig::default(),
        Arc::new(Vec::<CameraStatus>::new),
        rec.status(),
    )
    .expect("api state");
    let token = std::fs::read_to_string(dir.path().join("api-token")).expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let api_task = tokio::spawn(api::serve_on(listener, api_state, cancel.clone()));
    let (tx, rx) = feed::channel("recorder", 64);
    let rec_task = tokio::spawn(rec.run(rx, cancel.clone()));

    let gops = tokio::task::spawn_blocking(|| encode(320, 240, 10, 10, 10))
        .await
        .expect("encode");
    let cam = camera_id(9);
    tx.offer(online(cam, "full", &gops, 320, 240, 10));
    let mut capture = 0u64;
    let mut written_at_first_full = None;
    // 900 one-second GOPs: many times what 8 MiB holds.
    for id in 1..=900u64 {
        let g = &gops[id as usize % gops.len()];
        clock.advance(Duration::from_secs(1));
        tx.offer(group(cam, id, g, capture, 10));
        capture += 1_000_000;
        // A real camera sends one GOP a second: let the recorder take each
        // before the simulated clock moves on, so arrival times stay real.
        while tx.tx.capacity() < 64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if written_at_first_full.is_none() && stats.disk_full.load(Ordering::Relaxed) > 0 {
            written_at_first_full = Some(stats.fragments_written.load(Ordering::Relaxed));
        }
    }
    while tx.tx.capacity() < 64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The API answers on the full disk.
    // (health needs no token; a wrong one is ignored there.)
    let health = api::client::get(addr, "", "/api/v1/health")
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let cams = api::client::get(addr, token.trim(), "/api/v1/cameras")
        .await
        .expect("cameras");
    assert_eq!(cams.status(), 200);
    cancel.cancel();
    rec_task.await.expect("recorder ended cleanly");
    api_task.await.expect("api task").expect("api ok");

    let full = stats.disk_full.load(Ordering::Relaxed);
    let written = stats.fragments_written.load(Ordering::Relaxed);
    let deleted = stats.segments_deleted.load(Ordering::Relaxed);
    println!(
        "disk full {full} times, {written} fragments written, {} dropped, {} segments opened, {deleted} deleted",
        stats.fragments_dropped.load(Ordering::Relaxed),
        stats.segments_opened.load(Ordering::Relaxed)
    );
    assert!(
        full > 0,
        "the disk never filled: test is not testing anything"
    );
    assert!(deleted > 0, "retention freed nothing");
    let first = written_at_first_full.expect("disk filled during the run");
    assert!(
        written > first + 100,
        "recording did not continue after the disk filled ({first} → {written})"
    );
    assert!(
        stats.fragments_dropped.load(Ordering::Relaxed) < 20,
        "most GOPs must still be recorded"
    );
    assert_eq!(
        tx.stats.groups_dropped.load(Ordering::Relaxed),
        0,
        "the recorder kept draining its feed"
    );
    assert_consistent(dir.path());
}
