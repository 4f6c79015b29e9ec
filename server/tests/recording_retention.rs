//! Retention by age, total size and per-camera size deletes the oldest
//! segments first, never the one being written, and leaves index and disk in
//! agreement.

mod recording_support;

use std::sync::Arc;
use std::time::Duration;

use kodama_server::db::Db;
use kodama_server::recorder::{Recorder, RecorderConfig, SimulatedClock};
use recording_support::*;

const T0: i64 = 1_750_000_000_000_000;

/// Records `sessions` one-segment sessions per camera, `gap` apart.
fn record(rec: &mut Recorder, clock: &SimulatedClock, cams: &[u8], sessions: usize, gap: Duration) {
    let gops = encode(160, 120, 10, 10, 3);
    let mut capture = 0;
    for _ in 0..sessions {
        for &c in cams {
            let cam = camera_id(c);
            rec.handle_event(online(cam, &format!("cam{c}"), &gops, 160, 120, 10));
        }
        for (i, g) in gops.iter().enumerate() {
            clock.advance(Duration::from_secs(1));
            for &c in cams {
                rec.handle_event(group(camera_id(c), i as u64 + 1, g, capture, 10));
            }
            capture += 1_000_000;
        }
        clock.advance(gap);
        capture += gap.as_micros() as u64;
    }
}

fn starts(dir: &std::path::Path) -> Vec<(i64, i64)> {
    let db = Db::open(&dir.join("kodama.db")).expect("db");
    db.all_segments()
        .expect("rows")
        .iter()
        .map(|s| (s.camera_id, s.start_us))
        .collect()
}

#[test]
fn by_age_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let cfg = RecorderConfig {
        data_dir: dir.path().to_owned(),
        max_age_days: 2,
        ..RecorderConfig::default()
    };
    let mut rec = Recorder::open(cfg.clone(), clock.clone()).expect("open");
    // Five sessions a day apart: after the last, only the ones of the last
    // two days remain.
    // A day minus a minute apart, so that exactly two are younger than two days.
    record(&mut rec, &clock, &[1], 5, Duration::from_secs(86_340));
    rec.close_all();
    drop(rec);
    // Retention ran while recording: of five daily sessions (the last ended a
    // day ago), the two newest remain, and they are the newest two.
    let after = starts(dir.path());
    let now = clock_now(&clock);
    assert_eq!(after.len(), 2, "{after:?}");
    let day = 86_400_000_000i64;
    assert!(
        after[0].1 > T0 + 3 * day - 600_000_000 && after[1].1 > T0 + 4 * day - 600_000_000,
        "{after:?}"
    );
    assert!(after.iter().all(|&(_, s)| s > now - 2 * day));
    assert_consistent(dir.path());
    // A day later, at the next start, one more goes.
    clock.advance(Duration::from_secs(86_400));
    drop(Recorder::open(cfg, clock.clone()).expect("reopen"));
    assert_eq!(starts(dir.path()), after[1..].to_vec());
    assert_consistent(dir.path());
}

fn clock_now(c: &SimulatedClock) -> i64 {
    use kodama_server::recorder::Clock;
    c.wall_us()
}

#[test]
fn by_total_and_camera_size_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    // Measure one session's size first.
    let probe = tempfile::tempdir().expect("tempdir");
    {
        let mut rec = Recorder::open(
            RecorderConfig {
                data_dir: probe.path().to_owned(),
                ..RecorderConfig::default()
            },
            Arc::new(SimulatedClock::new(T0)),
        )
        .expect("open");
        record(
            &mut rec,
            &SimulatedClock::new(T0),
            &[1],
            1,
            Duration::from_secs(60),
        );
        rec.close_all();
    }
    let one = Db::open(&probe.path().join("kodama.db"))
        .expect("db")
        .total_bytes(None)
        .expect("bytes") as f64;

    // Total limit of ~4.5 sessions over two cameras; camera 2 limited to ~1.5.
    let cfg = RecorderConfig {
        data_dir: dir.path().to_owned(),
        max_total_gb: one * 4.5 / 1e9,
        max_camera_gb: Some(one * 1.5 / 1e9),
        ..RecorderConfig::default()
    };
    let mut rec = Recorder::open(cfg.clone(), clock.clone()).expect("open");
    record(&mut rec, &clock, &[1, 2], 6, Duration::from_secs(60));
    rec.close_all();
    drop(Recorder::open(cfg, clock.clone()).expect("reopen"));

    let db = Db::open(&dir.path().join("kodama.db")).expect("db");
    let total = db.total_bytes(None).expect("total") as f64;
    assert!(total <= one * 4.5, "total {total} > limit {}", one * 4.5);
    let cams = db.cameras().expect("cams");
    let cam2 = cams.iter().find(|c| c.name == "cam2").expect("cam2").id;
    let cam1 = cams.iter().find(|c| c.name == "cam1").expect("cam1").id;
    assert!(db.total_bytes(Some(cam2)).expect("b") as f64 <= one * 1.5);
    // Oldest first: what remains of each camera is its newest sessions.
    for cam in [cam1, cam2] {
        let rows: Vec<i64> = db
            .all_segments()
            .expect("rows")
            .iter()
            .filter(|s| s.camera_id == cam)
            .map(|s| s.start_us)
            .collect();
        assert!(!rows.is_empty());
        let newest_session_start = T0 + 5 * 63_000_000;
        assert!(rows.iter().all(|&s| s >= T0 + 63_000_000), "{rows:?}");
        assert!(rows.iter().any(|&s| s >= newest_session_start), "{rows:?}");
    }
    drop(db);
    assert_consistent(dir.path());
}
