//! Start-up reconciliation as a function: truncated tails are trimmed to the
//! last complete fragment and indexed, unindexed files are re-indexed from
//! their `prft` times, rows of missing files are dropped, leftovers deleted.

mod recording_support;

use std::sync::Arc;
use std::time::Duration;

use kodama_server::db::Db;
use kodama_server::recorder::{reconcile, Recorder, RecorderConfig, SimulatedClock};
use recording_support::*;

const T0: i64 = 1_750_000_000_000_000;

/// Records three one-camera sessions (three segments) and returns the dir.
fn recorded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let cfg = RecorderConfig {
        data_dir: dir.path().to_owned(),
        ..RecorderConfig::default()
    };
    let mut rec = Recorder::open(cfg, clock.clone()).expect("open");
    let gops = encode(160, 120, 10, 10, 4);
    let cam = camera_id(3);
    let mut capture = 0;
    for _session in 0..3 {
        rec.handle_event(online(cam, "shed", &gops, 160, 120, 10));
        for (i, g) in gops.iter().enumerate() {
            clock.advance(Duration::from_secs(1));
            rec.handle_event(group(cam, i as u64 + 1, g, capture, 10));
            capture += 1_000_000;
        }
        clock.advance(Duration::from_secs(30));
        capture += 30_000_000;
    }
    rec.close_all();
    dir
}

#[test]
fn repairs_every_kind_of_damage() {
    let dir = recorded();
    let root = dir.path().join("recordings");
    let db_path = dir.path().join("kodama.db");
    let mut db = Db::open(&db_path).expect("db");
    let rows = db.all_segments().expect("rows");
    assert_eq!(rows.len(), 3);

    // 1. Segment 0: a partial fragment after the end (a crash mid-write) and
    //    the last indexed fragment forgotten by the index (crash before commit).
    let p0 = root.join(&rows[0].path);
    let frs = db.fragments(rows[0].id).expect("frags");
    let last = *frs.last().expect("fragment");
    let mut bytes = std::fs::read(&p0).expect("read");
    let partial = bytes[last.offset as usize..(last.offset + last.len / 2) as usize].to_vec();
    bytes.extend_from_slice(&partial);
    std::fs::write(&p0, &bytes).expect("write");
    db.connection()
        .execute(
            "DELETE FROM fragment WHERE segment_id = ?1 AND seq = ?2",
            (rows[0].id, last.seq),
        )
        .expect("forget");
    db.connection()
        .execute(
            "UPDATE segment SET bytes = ?2, frames = frames - ?3, fragments = fragments - 1, open = 1 WHERE id = ?1",
            (rows[0].id, last.offset, last.frames),
        )
        .expect("forget");
    // 2. Segment 1's file is gone.
    std::fs::remove_file(root.join(&rows[1].path)).expect("rm");
    // 3. Segment 2's row is gone: the file must be re-indexed.
    db.delete_segment(rows[2].id).expect("forget");
    // 4. A temporary file from a create that never finished, and junk.
    let day = root.join(&rows[0].path).parent().expect("day").to_owned();
    std::fs::write(day.join("23-59-59.mp4.tmp"), b"partial").expect("tmp");
    std::fs::write(day.join("23-59-58.mp4"), b"not an mp4 at all").expect("junk");

    let report = reconcile(&mut db, &root).expect("reconciles");
    assert_eq!(report.rows_dropped, 1);
    assert_eq!(report.rows_repaired, 1);
    assert_eq!(report.files_indexed, 1);
    assert_eq!(report.files_deleted, 2);
    assert_eq!(report.bytes_trimmed, partial.len() as u64);
    assert_eq!(report.fragments_added, 1 + 4);
    drop(db);

    let (segments, fragments) = assert_consistent(dir.path());
    assert_eq!((segments, fragments), (2, 8));
    let db = Db::open(&db_path).expect("db");
    let now = db.all_segments().expect("rows");
    // The re-indexed segment keeps its wall-clock times (from prft).
    assert_eq!(now[1].start_us, rows[2].start_us);
    assert!((now[1].end_us - rows[2].end_us).abs() < 1_000);
    assert!(now.iter().all(|s| !s.open && s.frames == 40));
    assert_eq!(now[1].codec, "avc1.42c00c");

    // Reconciling a consistent index changes nothing.
    let mut db = db;
    let again = reconcile(&mut db, &root).expect("again");
    assert_eq!(
        (
            again.rows_repaired,
            again.fragments_added,
            again.files_deleted
        ),
        (0, 0, 0)
    );
}

/// A crash between retention's commit (rows deleted, path in `garbage`) and
/// the unlink: the next start deletes the file instead of re-indexing it.
#[test]
fn a_deletion_interrupted_by_a_crash_is_finished_at_start() {
    let dir = recorded();
    let root = dir.path().join("recordings");
    let db_path = dir.path().join("kodama.db");
    let victim = {
        let mut db = Db::open(&db_path).expect("db");
        let oldest = db.all_segments().expect("rows").remove(0);
        db.retire_segments(&[(oldest.id, oldest.path.as_str())])
            .expect("retire");
        oldest.path
    };
    assert!(root.join(&victim).exists(), "the crash came before unlink");
    let rec = Recorder::open(
        RecorderConfig {
            data_dir: dir.path().to_owned(),
            ..RecorderConfig::default()
        },
        Arc::new(SimulatedClock::new(T0)),
    )
    .expect("reopen");
    assert_eq!(rec.reconcile_report().garbage_collected, 1);
    assert_eq!(rec.reconcile_report().files_indexed, 0);
    drop(rec);
    assert!(!root.join(&victim).exists());
    let db = Db::open(&db_path).expect("db");
    assert!(db.garbage().expect("garbage").is_empty());
    assert_eq!(db.all_segments().expect("rows").len(), 2);
    assert_consistent(dir.path());
}

/// The writer syncs and commits in batches: one transaction and one sync
/// per `flush_seconds` (5 s of one-second GOPs here), not per GOP, and
/// nothing is visible to another connection before its flush.
#[test]
fn fragments_are_committed_in_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let cfg = RecorderConfig {
        data_dir: dir.path().to_owned(),
        ..RecorderConfig::default()
    };
    let mut rec = Recorder::open(cfg, clock.clone()).expect("open");
    let stats = rec.stats();
    let gops = encode(160, 120, 10, 10, 4);
    let cam = camera_id(4);
    rec.handle_event(online(cam, "batch", &gops, 160, 120, 10));
    let reader = Db::open(&dir.path().join("kodama.db")).expect("reader");
    let indexed = || -> i64 {
        reader
            .all_segments()
            .expect("rows")
            .iter()
            .map(|s| s.fragments)
            .sum()
    };
    for i in 0..20u64 {
        clock.advance(Duration::from_secs(1));
        rec.handle_event(group(
            cam,
            i + 1,
            &gops[(i % 4) as usize],
            i * 1_000_000,
            10,
        ));
        if i == 2 {
            assert_eq!(indexed(), 0, "not committed before the flush is due");
        }
    }
    let commits = stats
        .index_commits
        .load(std::sync::atomic::Ordering::Relaxed);
    let written = stats
        .fragments_written
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(written, 20);
    assert!((3..=5).contains(&commits), "{commits} commits for 20 GOPs");
    assert!(
        indexed() >= 15,
        "flushed batches are visible: {}",
        indexed()
    );
    rec.close_all();
    assert_eq!(indexed(), 20);
    assert_consistent(dir.path());
}
