//! Store-and-forward over real iroh on loopback: a camera keeps filming
//! while its server is down (stopped, then restarted on the same data
//! directory and port), keeps every GOP in its on-disk backlog, and uploads
//! it behind live video once the server is back. Afterwards the server's
//! index holds every frame the camera captured, checked by sequence number,
//! in backfilled segments that close the gap in the timeline — also when the
//! camera itself restarts (same key, same backlog directory) mid-outage.
//! A camera with a microphone keeps the audio of the outage with its GOPs:
//! the backfilled segments hold it, in time with the video.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use kodama_net::SecretKey;
use kodama_server::allowlist::PeerRole;

/// Capture times of the frames a camera produced, in capture order: the
/// frame at index `i` got sequence number `i` from the capture thread
/// (which numbers every frame it hands on, starting at 0).
fn captured(cam: &TestCamera) -> Vec<u64> {
    let mut caps: Vec<u64> = cam.sent.lock().expect("lock").keys().copied().collect();
    caps.sort_unstable();
    caps
}

/// Waits (bounded) until the camera's backlog is empty and nothing is in
/// flight; returns the status seen last.
async fn wait_backlog_uploaded(cam: &mut TestCamera, within: Duration) {
    let status = cam.backlog.as_mut().expect("camera keeps a backlog");
    let waited = tokio::time::timeout(
        within,
        status.wait_for(|s| s.ring.gops == 0 && s.in_flight == 0 && s.ring.uploaded_gops > 0),
    )
    .await
    .map(|r| r.is_ok());
    let now = *status.borrow();
    assert!(
        waited.is_ok(),
        "backlog not uploaded within {within:?}: {now:?}"
    );
    eprintln!("backlog after upload: {now:?}");
}

async fn wait_backlog_holds(cam: &mut TestCamera, gops: u64, within: Duration) {
    let status = cam.backlog.as_mut().expect("camera keeps a backlog");
    let held = tokio::time::timeout(within, status.wait_for(|s| s.ring.gops >= gops))
        .await
        .map(|r| r.is_ok());
    assert!(
        held == Ok(true),
        "backlog never held {gops} GOPs: {:?}",
        *status.borrow()
    );
}

/// Every frame of every camera process is in the index, by sequence number.
/// `runs` holds each process's capture times in sequence order and how many
/// of the first ones must be recorded (the rest were filmed as the test
/// stopped). Returns (frames checked, backfilled fragments).
fn assert_every_frame_recorded(
    data_dir: &Path,
    key: &SecretKey,
    runs: &[(Vec<u64>, usize)],
) -> (usize, usize) {
    let (db, cam) = open_index(data_dir, key);
    let mut by_capture: HashMap<u64, (usize, usize)> = HashMap::new();
    for (run, (caps, _)) in runs.iter().enumerate() {
        for (seq, c) in caps.iter().enumerate() {
            by_capture.insert(*c, (run, seq));
        }
    }
    let mut covered: Vec<Vec<bool>> = runs.iter().map(|(r, _)| vec![false; r.len()]).collect();
    let mut backfilled = 0;
    for (capture_us, first_seq, frames, backfill) in db.fragment_origins(cam.id).expect("origins") {
        let Some(&(run, seq)) = by_capture.get(&(capture_us as u64)) else {
            panic!(
                "a fragment starts at capture time {capture_us}, which the camera never captured"
            );
        };
        assert_eq!(
            first_seq as usize, seq,
            "fragment at {capture_us}: the index's sequence number matches the camera's"
        );
        backfilled += usize::from(backfill);
        for s in seq..(seq + frames as usize).min(covered[run].len()) {
            covered[run][s] = true;
        }
    }
    let mut checked = 0;
    for (run, c) in covered.iter().enumerate() {
        let required = runs[run].1;
        let missing: Vec<usize> = (0..required).filter(|&s| !c[s]).collect();
        assert!(
            missing.is_empty(),
            "camera run {run}: {} of {} frames missing from the recording, sequence numbers {:?}…",
            missing.len(),
            required,
            &missing[..missing.len().min(20)]
        );
        checked += required;
    }
    (checked, backfilled)
}

/// The camera's segments cover `[from, to]` (wall µs) with no hole longer
/// than a GOP and a bit.
fn assert_timeline_whole(data_dir: &Path, key: &SecretKey, from_us: i64, to_us: i64) {
    let (db, cam) = open_index(data_dir, key);
    let segs = db
        .segments_between(cam.id, from_us, to_us)
        .expect("segments");
    let mut cursor = from_us;
    for s in &segs {
        assert!(
            s.start_us - cursor <= 1_000_000,
            "timeline gap of {} ms before segment {} (backfill: {})",
            (s.start_us - cursor) / 1000,
            s.path,
            s.backfill
        );
        cursor = cursor.max(s.end_us);
    }
    assert!(
        to_us - cursor <= 1_000_000,
        "timeline ends {} ms early",
        (to_us - cursor) / 1000
    );
    assert!(
        segs.iter().any(|s| s.backfill),
        "some segments are backfilled"
    );
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// One outage: the server goes away for `outage` (the camera restarts
/// halfway through when `reboot`), comes back on the same data directory,
/// and the recording ends up complete.
async fn outage(outage: Duration, reboot: bool) {
    outage_with(outage, reboot, false).await;
}

/// [`outage`], with a camera that has a microphone when `audio`: then the
/// backfilled segments must also hold the outage's audio.
async fn outage_with(outage: Duration, reboot: bool, audio: bool) {
    let data = tempfile::tempdir().expect("data dir");
    let backlog_dir = tempfile::tempdir().expect("backlog dir");
    let server = TestServer::start_in(data.path().to_owned(), None).await;
    let port = server.addr.port();
    let key = SecretKey::generate();
    server.allow(&key, PeerRole::Camera);
    let dial = server.dial_addr();
    let mut cam = if audio {
        start_camera_with_backlog_and_audio("porch", dial.clone(), key.clone(), backlog_dir.path())
            .await
    } else {
        start_camera_with_backlog("porch", dial.clone(), key.clone(), backlog_dir.path()).await
    };
    cam.wait_streaming(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stopped_us = now_us();
    server.stop().await;
    let mut runs = Vec::new();
    if reboot {
        tokio::time::sleep(outage / 2).await;
        wait_backlog_holds(&mut cam, 2, Duration::from_secs(5)).await;
        cam.stop();
        let uplink = std::mem::replace(&mut cam.uplink, tokio::spawn(async {}));
        tokio::time::timeout(Duration::from_secs(10), uplink)
            .await
            .expect("the stopped camera flushes its backlog in time")
            .expect("uplink task");
        let all = captured(&cam);
        let n = all.len();
        runs.push((all, n));
        cam =
            start_camera_with_backlog("porch", dial.clone(), key.clone(), backlog_dir.path()).await;
        tokio::time::sleep(outage / 2).await;
    } else {
        tokio::time::sleep(outage).await;
    }
    let gops_waiting = cam
        .backlog
        .as_ref()
        .map(|b| b.borrow().ring.gops)
        .unwrap_or(0);
    eprintln!("server back after {outage:?}; backlog holds {gops_waiting} GOPs");
    assert!(gops_waiting > 0, "the outage was kept in the backlog");

    let restarted_us = now_us();
    let server = TestServer::start_in(data.path().to_owned(), Some(port)).await;
    let back = std::time::Instant::now();
    cam.wait_streaming(Duration::from_secs(15)).await;
    eprintln!(
        "camera streaming again {:?} after the server restarted",
        back.elapsed()
    );
    wait_backlog_uploaded(&mut cam, Duration::from_secs(60) + outage * 2).await;
    let upload_s = back.elapsed().as_secs_f64();

    // The API shows the camera's backlog (from its telemetry) and the
    // recorder's backfill progress.
    let token = std::fs::read_to_string(&server.server.api_token).expect("token");
    let api: SocketAddr = server.server.api_addr;
    let resp = kodama_server::api::client::get(api, token.trim(), "/api/v1/cameras")
        .await
        .expect("cameras");
    let body = kodama_server::api::client::body_bytes(api, resp)
        .await
        .expect("body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let listed = &json["cameras"][0];
    assert!(
        listed["backfill"]["fragments"].as_u64().unwrap_or(0) > 0,
        "API shows backfill progress: {listed}"
    );

    // Everything captured until now must be recorded once live GOPs in
    // flight have landed.
    let required = captured(&cam).len();
    let ended_us = now_us();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cam.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut cam.uplink).await;
    server.stop().await;
    runs.push((captured(&cam), required));

    let (frames, backfilled) = assert_every_frame_recorded(data.path(), &key, &runs);
    eprintln!(
        "BENCH backfill outage={:?} reboot={reboot} frames_checked={frames} backfilled_fragments={backfilled} lost=0 upload_done_after_s={upload_s:.1}",
        outage
    );
    assert!(backfilled > 0, "the outage was backfilled");
    if audio {
        // Nothing filmed while the server was down reached it live: every
        // packet of that window came through the backlog.
        let audio = assert_outage_audio(
            data.path(),
            &key,
            (stopped_us, restarted_us),
            0.8,
            Duration::ZERO,
        )
        .await;
        let audio_dropped = cam.backlog.as_ref().map_or(0, |b| b.borrow().audio_dropped);
        eprintln!(
            "BENCH backfill audio: {} Opus packets of the {:.1} s outage recorded ({:.0} % of {:.0}); {} backfilled in all; worst fragment A/V start offset {:.1} ms; camera dropped {audio_dropped}",
            audio.in_outage,
            (restarted_us - stopped_us) as f64 / 1e6,
            100.0 * audio.in_outage as f64 / audio.expected,
            audio.expected,
            audio.backfilled,
            audio.worst_offset_s * 1000.0
        );
    }
    // From shortly after the (last) camera process began filming: a camera
    // that is off films nothing, so the reboot itself may leave a hole.
    let filming_from = runs
        .last()
        .and_then(|(r, _)| r.first())
        .map_or(0, |&c| c as i64);
    assert_timeline_whole(
        data.path(),
        &key,
        filming_from + 500_000,
        ended_us - 1_000_000,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outage_is_backfilled_completely() {
    outage(Duration::from_secs(6), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outage_backfills_audio_with_video() {
    outage_with(Duration::from_secs(4), false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_reboot_during_outage_loses_nothing() {
    outage(Duration::from_secs(8), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_second_outage_is_backfilled_completely() {
    outage(Duration::from_secs(30), false).await;
}
