//! Recorder benchmark. Prints:
//! * camera streams × Mbit/s the recorder sustains, with CPU%, fdatasyncs
//!   and index transactions per GOP and write amplification (bytes written /
//!   video bytes received) — batched (default `flush_seconds`) beside a sync
//!   and commit per GOP (`flush_seconds = 0`) in the same run;
//! * time to reconcile an index of 10,000 segments at start;
//! * export throughput (MB/s).
//!
//! `cargo bench -p kodama-server --bench recorder`; `KODAMA_BENCH_CAMERAS`
//! (default 8), `KODAMA_BENCH_MBPS` (default 4), `KODAMA_BENCH_SECONDS`
//! (default 30) and `KODAMA_BENCH_DIR` (default: a temp dir under /tmp) tune it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kodama_media::fmp4;
use kodama_net::SecretKey;
use kodama_proto::{CameraInfo, Channel, Codec, Frame, FrameFlags};
use kodama_server::api::export;
use kodama_server::db::{Db, NewSegment};
use kodama_server::feed::{FeedEvent, Group};
use kodama_server::recorder::{reconcile, Recorder, RecorderConfig, SimulatedClock};
use rand::RngCore;

const SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x80, 0x6d, 0x0a, 0x13, 0x50,
];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const FPS: u64 = 25;
const GOP: u64 = 50;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this process (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime) are 11th and 12th after the comm.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Bytes this process caused to be written: (to storage, via write calls).
fn io_written() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    (get("write_bytes:"), get("wchar:"))
}

/// One GOP of synthetic access units averaging `mbps`: an IDR four times
/// the size of each P frame. The recorder does not decode, so random slice
/// data is as good as real for measuring it.
fn gop(mbps: u64) -> Vec<Bytes> {
    let bytes_per_gop = mbps * 1_000_000 / 8 * GOP / FPS;
    let p = bytes_per_gop / (GOP + 3);
    let mut rng = rand::rng();
    (0..GOP)
        .map(|i| {
            let size = if i == 0 { 4 * p } else { p } as usize;
            let mut au = vec![0, 0, 0, 1, if i == 0 { 0x65 } else { 0x41 }];
            let mut body = vec![0u8; size];
            rng.fill_bytes(&mut body);
            // No start codes inside the payload.
            for b in body.iter_mut() {
                if *b == 0 {
                    *b = 1;
                }
            }
            au.extend_from_slice(&body);
            Bytes::from(au)
        })
        .collect()
}

fn group_event(camera: kodama_net::EndpointId, id: u64, aus: &[Bytes], capture: u64) -> FeedEvent {
    let frames = aus
        .iter()
        .enumerate()
        .map(|(i, au)| {
            Arc::new(Frame {
                channel: Channel::Video,
                flags: if i == 0 {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::empty()
                },
                capture_us: capture + i as u64 * 1_000_000 / FPS,
                sequence: id * GOP + i as u64,
                payload: au.clone(),
            })
        })
        .collect();
    FeedEvent::Group {
        camera,
        group: Arc::new(Group {
            id,
            frames,
            truncated: false,
        }),
    }
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// What one sustained-recording run measured.
struct Sustained {
    wall: Duration,
    cpu: Duration,
    syncs: u64,
    commits: u64,
}

/// Records `seconds` of `cameras` × `mbps` streams into `data_dir` with
/// the given flush interval, as fast as the disk allows; prints and
/// returns the figures.
fn sustained(
    data_dir: &std::path::Path,
    flush_seconds: u32,
    cameras: u64,
    mbps: u64,
    seconds: u64,
) -> Sustained {
    use std::sync::atomic::Ordering::Relaxed;
    let t0 = 1_750_000_000_000_000i64;
    let clock = Arc::new(SimulatedClock::new(t0));
    let cfg = RecorderConfig {
        data_dir: data_dir.to_owned(),
        flush_seconds,
        ..RecorderConfig::default()
    };
    let mut rec = Recorder::open(cfg, clock.clone()).expect("open");
    let stats = rec.stats();
    let gops: Vec<Vec<Bytes>> = (0..4).map(|_| gop(mbps)).collect();
    let cams: Vec<_> = (0..cameras)
        .map(|i| SecretKey::from_bytes(&[i as u8 + 1; 32]).public())
        .collect();
    for (i, &c) in cams.iter().enumerate() {
        rec.handle_event(FeedEvent::CameraOnline {
            camera: c,
            info: CameraInfo {
                name: format!("bench{i}"),
                codec: Codec::H264,
                width: 640,
                height: 480,
                fps_milli: (FPS * 1000) as u32,
                bitrate_kbps: (mbps * 1000) as u32,
                sps: Bytes::from_static(SPS),
                pps: Bytes::from_static(PPS),
                firmware: "bench".into(),
                audio: None,
            },
        });
    }
    let gop_us = GOP * 1_000_000 / FPS;
    let n_gops = seconds * 1_000_000 / gop_us;
    let (syncs0, commits0) = (
        stats.file_syncs.load(Relaxed),
        stats.index_commits.load(Relaxed),
    );
    let (wb0, wc0) = io_written();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for g in 0..n_gops {
        clock.advance(Duration::from_micros(gop_us));
        for &c in &cams {
            rec.handle_event(group_event(c, g + 1, &gops[(g % 4) as usize], g * gop_us));
        }
    }
    rec.close_all();
    let wall = start.elapsed();
    let cpu = cpu_time() - cpu0;
    let (wb1, wc1) = io_written();
    drop(rec);
    let payload = stats.payload_bytes.load(Relaxed);
    let written = stats.fragments_written.load(Relaxed).max(1);
    let syncs = stats.file_syncs.load(Relaxed) - syncs0;
    let commits = stats.index_commits.load(Relaxed) - commits0;
    let on_disk = dir_bytes(data_dir);
    let video_s = (n_gops * gop_us) as f64 / 1e6;
    let rate_mbps = payload as f64 * 8.0 / wall.as_secs_f64() / 1e6;
    let realtime = video_s / wall.as_secs_f64();
    let mode = if flush_seconds == 0 {
        "sync + commit per GOP".to_owned()
    } else {
        format!("flush every {flush_seconds} s")
    };
    println!("recorder ({mode}): {cameras} cameras x {mbps} Mbit/s, {video_s:.0} s of video each, in {:.2} s wall", wall.as_secs_f64());
    println!(
        "  {:.3} fdatasync and {:.3} index transactions per GOP ({syncs} and {commits} for {written} GOPs; 2 s GOPs)",
        syncs as f64 / written as f64,
        commits as f64 / written as f64,
    );
    println!(
        "  sustained {rate_mbps:.1} Mbit/s = {:.0} camera streams x {mbps} Mbit/s ({realtime:.1}x real time for {cameras})",
        cameras as f64 * realtime
    );
    println!(
        "  CPU {:.0}% of one core while writing; at {cameras} x {mbps} Mbit/s real time: {:.1}% of one core",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / video_s
    );
    println!(
        "  write amplification: {:.3} (write calls {} B) / {:.3} (storage {} B) / {:.3} (on disk {} B) per {} B of video",
        (wc1 - wc0) as f64 / payload as f64,
        wc1 - wc0,
        (wb1 - wb0) as f64 / payload as f64,
        wb1 - wb0,
        on_disk as f64 / payload as f64,
        on_disk,
        payload
    );
    Sustained {
        wall,
        cpu,
        syncs,
        commits,
    }
}

fn main() {
    let base = std::env::var("KODAMA_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let cameras = env("KODAMA_BENCH_CAMERAS", 8);
    let mbps = env("KODAMA_BENCH_MBPS", 4);
    let seconds = env("KODAMA_BENCH_SECONDS", 30);

    // 1. Sustained recording: the batched writer (default flush) and, as
    // the baseline in the same run, a sync and commit after every GOP.
    let t0 = 1_750_000_000_000_000i64;
    let base = sustained(&dir.path().join("rec-per-gop"), 0, cameras, mbps, seconds);
    let batched = sustained(
        &dir.path().join("rec"),
        RecorderConfig::default().flush_seconds,
        cameras,
        mbps,
        seconds,
    );
    println!(
        "  batched vs per-GOP: {:.2}x the fdatasyncs, {:.2}x the transactions, {:.2}x the CPU, {:.2}x the wall time",
        batched.syncs as f64 / base.syncs.max(1) as f64,
        batched.commits as f64 / base.commits.max(1) as f64,
        batched.cpu.as_secs_f64() / base.cpu.as_secs_f64().max(1e-9),
        batched.wall.as_secs_f64() / base.wall.as_secs_f64().max(1e-9),
    );

    // 3. Export throughput (camera 0, everything).
    let data = dir.path().join("rec");
    let db = Db::open(&data.join("kodama.db")).expect("db");
    let cam0 = db
        .cameras()
        .expect("cameras")
        .into_iter()
        .find(|c| c.name == "bench0")
        .expect("cam0");
    let start = Instant::now();
    let plan = export::plan(&db, &data.join("recordings"), cam0.id, t0, i64::MAX / 2)
        .expect("plan")
        .expect("some");
    let mut n = 0u64;
    export::produce(&plan, |b| {
        n += b.len() as u64;
        true
    })
    .expect("export");
    let el = start.elapsed();
    println!(
        "export: {:.1} MB in {:.3} s = {:.0} MB/s (page cache warm)",
        n as f64 / 1e6,
        el.as_secs_f64(),
        n as f64 / 1e6 / el.as_secs_f64()
    );
    drop(db);

    // 2. Reconcile an index of 10,000 segments.
    let rdir = dir.path().join("reconcile");
    let root = rdir.join("recordings");
    let mut db = Db::open(&{
        std::fs::create_dir_all(&root).expect("mkdir");
        rdir.join("kodama.db")
    })
    .expect("db");
    let track = fmp4::VideoTrack::new(SPS, PPS).expect("track");
    let init = fmp4::init_segment(&track);
    let small = gop(1);
    let mut data_bytes = Vec::new();
    let mut samples = Vec::new();
    for au in &small[..5] {
        let size = fmp4::append_sample(au, &mut data_bytes);
        samples.push(fmp4::SampleInfo {
            duration: 3600,
            size: size as u32,
            keyframe: samples.is_empty(),
        });
    }
    let header = fmp4::FragmentHeader {
        sequence: 1,
        base_decode_time: 0,
        wall_time_us: Some(t0),
        samples,
    };
    let mut file = init.clone();
    file.extend(fmp4::fragment_header(&header).expect("header"));
    file.extend(&data_bytes);
    let cam = db.upsert_camera("benchcam", "bench", t0).expect("camera");
    db.connection().execute_batch("BEGIN").expect("begin");
    for i in 0..10_000i64 {
        let rel = format!("benchcam/day{}/{i:05}.mp4", i / 1000);
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, &file).expect("write");
        let id = db
            .insert_segment(&NewSegment {
                camera_id: cam,
                path: &rel,
                start_us: t0 + i * 60_000_000,
                init_bytes: init.len() as i64,
                codec: "avc1.42c01e",
                width: 640,
                height: 480,
                backfill: false,
                open: false,
            })
            .expect("segment");
        db.connection()
            .execute(
                "INSERT INTO fragment (segment_id, seq, start_us, duration_us, offset, len, frames) VALUES (?1, 1, ?2, 200000, ?3, ?4, 5)",
                (id, t0 + i * 60_000_000, init.len() as i64, (file.len() - init.len()) as i64),
            )
            .expect("fragment");
        db.connection()
            .execute("UPDATE segment SET bytes = ?2, fragments = 1, frames = 5, end_us = start_us + 200000 WHERE id = ?1", (id, file.len() as i64))
            .expect("update");
    }
    db.connection().execute_batch("COMMIT").expect("commit");
    // The usual crash: the newest segment was open and has a partial tail.
    let last = root.join("benchcam/day9/09999.mp4");
    let mut tail = file.clone();
    tail.extend_from_slice(&file[init.len()..init.len() + 100]);
    std::fs::write(&last, &tail).expect("write");
    db.connection()
        .execute(
            "UPDATE segment SET open = 1 WHERE path = 'benchcam/day9/09999.mp4'",
            [],
        )
        .expect("open");
    let start = Instant::now();
    let report = reconcile(&mut db, &root).expect("reconcile");
    let el = start.elapsed();
    println!(
        "reconcile: 10,000 segments in {:.1} ms ({} checked, {} repaired, {} B trimmed)",
        el.as_secs_f64() * 1e3,
        report.rows_checked,
        report.rows_repaired,
        report.bytes_trimmed
    );
}
