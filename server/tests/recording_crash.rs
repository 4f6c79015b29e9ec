//! `kill -9` during recording, repeated at random moments: after each kill
//! a restart reconciles, the index agrees with the files, every complete
//! fragment is playable, and recording resumes (new segments appear).
//!
//! The test binary is its own victim: run with `KODAMA_CRASH_CHILD=<dir>` it
//! records endlessly into `<dir>` (after printing "ready"); otherwise it is
//! the test, spawning and killing such children. (Custom harness, so the
//! child is not a test function.)

mod recording_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kodama_server::db::Db;
use kodama_server::recorder::{Recorder, RecorderConfig, SystemClock};
use rand::Rng;
use recording_support::*;

fn config(dir: &std::path::Path) -> RecorderConfig {
    RecorderConfig {
        data_dir: dir.to_owned(),
        ..RecorderConfig::default()
    }
}

/// The child: records pre-encoded GOPs as fast as the disk allows.
fn child(dir: &std::path::Path) {
    let gops = encode(160, 120, 10, 5, 8);
    let mut rec = Recorder::open(config(dir), Arc::new(SystemClock::new())).expect("open");
    let cam = camera_id(7);
    rec.handle_event(online(cam, "crash", &gops, 160, 120, 10));
    println!("ready");
    let mut capture = 0u64;
    // Bounded only by the parent's SIGKILL, but never longer than a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut id = 1u64;
    while Instant::now() < deadline {
        let g = &gops[(id as usize) % gops.len()];
        rec.handle_event(group(cam, id, g, capture, 10));
        capture += g.len() as u64 * 100_000;
        id += 1;
    }
}

fn main() {
    if let Ok(dir) = std::env::var("KODAMA_CRASH_CHILD") {
        child(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("own path");
    let mut rng = rand::rng();
    let mut segments_before = 0usize;
    for round in 0..6 {
        let mut c = Command::new(&exe)
            .env("KODAMA_CRASH_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("child output");
        assert_eq!(line.trim(), "ready", "child did not start");
        std::thread::sleep(Duration::from_millis(rng.random_range(50..600)));
        c.kill().expect("SIGKILL");
        let status = c.wait().expect("reaped");
        assert!(!status.success());

        // Restart: reconciliation repairs; then the index and files agree.
        let rec = Recorder::open(config(dir.path()), Arc::new(SystemClock::new())).expect("reopen");
        let report = rec.reconcile_report().clone();
        drop(rec);
        let (segments, fragments) = assert_consistent(dir.path());
        println!("round {round}: {report:?}; {segments} segments, {fragments} fragments");
        assert!(
            segments > segments_before,
            "recording resumed after restart {round}"
        );
        assert!(fragments > 0);
        segments_before = segments;
    }
    // Every segment decodes without error.
    let db = Db::open(&dir.path().join("kodama.db")).expect("db");
    for s in db.all_segments().expect("rows") {
        let path = dir.path().join("recordings").join(&s.path);
        let p = ffprobe(&path);
        assert_eq!(p.packets as i64, s.frames, "{}", s.path);
        decodes_cleanly(&path);
    }
    println!("test recording_crash ... ok");
}
