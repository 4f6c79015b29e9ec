//! Recording real H.264 into fMP4 segments: ffprobe validates codec,
//! resolution, exact frame count and duration of a segment and of an export;
//! segments roll on duration and on a resolution change; a missing GOP starts
//! a new segment (a visible gap); telemetry and events are stored.

mod recording_support;

use std::sync::Arc;
use std::time::Duration;

use kodama_proto::Channel;
use kodama_server::api::export;
use kodama_server::db::{AuxKind, Db};
use kodama_server::recorder::{Recorder, RecorderConfig, SimulatedClock};
use recording_support::*;

const T0: i64 = 1_750_000_000_000_000;

fn recorder(dir: &std::path::Path, clock: Arc<SimulatedClock>) -> Recorder {
    let cfg = RecorderConfig {
        data_dir: dir.to_owned(),
        ..RecorderConfig::default()
    };
    Recorder::open(cfg, clock).expect("recorder opens")
}

/// Feeds `gops` (at `fps`) as group ids `first_id..`, advancing the clock.
fn feed(
    rec: &mut Recorder,
    clock: &SimulatedClock,
    cam: kodama_net::EndpointId,
    gops: &[Vec<bytes::Bytes>],
    first_id: u64,
    capture0: u64,
    fps: u32,
) -> u64 {
    let mut capture = capture0;
    for (i, g) in gops.iter().enumerate() {
        let dur = g.len() as u64 * 1_000_000 / u64::from(fps);
        clock.advance(Duration::from_micros(dur));
        rec.handle_event(group(cam, first_id + i as u64, g, capture, fps));
        capture += dur;
    }
    capture
}

#[test]
fn segment_and_export_play_in_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let mut rec = recorder(dir.path(), clock.clone());
    let gops = encode(320, 240, 10, 10, 6);
    let frames_sent: usize = gops.iter().map(Vec::len).sum();
    let cam = camera_id(1);
    rec.handle_event(online(cam, "porch", &gops, 320, 240, 10));
    feed(&mut rec, &clock, cam, &gops, 1, 5_000_000, 10);
    rec.close_all();
    let (segments, fragments) = assert_consistent(dir.path());
    assert_eq!((segments, fragments), (1, gops.len()));

    let db = Db::open(&dir.path().join("kodama.db")).expect("db");
    let seg = &db.all_segments().expect("rows")[0];
    assert_eq!(seg.frames as usize, frames_sent);
    assert_eq!((seg.width, seg.height), (320, 240));
    let path = dir.path().join("recordings").join(&seg.path);
    assert!(seg.path.starts_with(&cam.to_string()));
    let p = ffprobe(&path);
    assert_eq!(p.codec, "h264");
    assert_eq!((p.width, p.height), (320, 240));
    assert_eq!(p.packets as usize, frames_sent);
    let sent_s = frames_sent as f64 / 10.0;
    assert!(
        (p.duration_s - sent_s).abs() <= 0.1 + 1e-6,
        "duration {} vs {sent_s}",
        p.duration_s
    );
    decodes_cleanly(&path);

    // Export the whole recording: same frames, same duration.
    let root = dir.path().join("recordings");
    let plan = export::plan(&db, &root, seg.camera_id, seg.start_us, seg.end_us)
        .expect("plan")
        .expect("something");
    let mut out = Vec::new();
    export::produce(&plan, |c| {
        out.extend_from_slice(&c);
        true
    })
    .expect("export");
    let exp = dir.path().join("export.mp4");
    std::fs::write(&exp, &out).expect("write");
    let p = ffprobe(&exp);
    assert_eq!(p.codec, "h264");
    assert_eq!((p.width, p.height), (320, 240));
    assert_eq!(p.packets as usize, frames_sent);
    assert!(
        (p.duration_s - sent_s).abs() <= 0.1 + 1e-6,
        "export duration {}",
        p.duration_s
    );
    decodes_cleanly(&exp);

    // A sub-range starts at the keyframe at or before `start` and ends at `end`:
    // start 2.5 s in (GOP 2 starts at 2 s) to 4.05 s → frames 20..=40.
    let plan = export::plan(
        &db,
        &root,
        seg.camera_id,
        seg.start_us + 2_500_000,
        seg.start_us + 4_050_000,
    )
    .expect("plan")
    .expect("something");
    let mut out = Vec::new();
    export::produce(&plan, |c| {
        out.extend_from_slice(&c);
        true
    })
    .expect("export");
    std::fs::write(&exp, &out).expect("write");
    let p = ffprobe(&exp);
    assert_eq!(p.packets, 21);
    decodes_cleanly(&exp);
}

#[test]
fn segments_roll_on_duration_resolution_and_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let mut rec = recorder(dir.path(), clock.clone());
    let cam = camera_id(2);
    // 10 fps, 2 s GOPs: 35 GOPs = 70 s, so the 1-minute segment rolls once.
    let small = encode(160, 120, 10, 20, 35);
    rec.handle_event(online(cam, "yard", &small, 160, 120, 10));
    let cap = feed(&mut rec, &clock, cam, &small, 1, 0, 10);
    // Resolution change at a keyframe (in-band SPS).
    let big = encode(320, 240, 10, 20, 2);
    let cap = feed(&mut rec, &clock, cam, &big, 36, cap, 10);
    // A missing GOP (id 38 never arrives): a new segment, so the gap shows.
    clock.advance(Duration::from_secs(2));
    feed(&mut rec, &clock, cam, &big, 39, cap + 2_000_000, 10);
    rec.handle_event(aux(
        cam,
        Channel::Telemetry,
        cap,
        r#"{"lat":52.1,"lon":4.3,"fix":"3d"}"#,
    ));
    rec.handle_event(aux(
        cam,
        Channel::Event,
        cap,
        r#"{"type":"motion","on":true}"#,
    ));
    rec.handle_event(aux(cam, Channel::Event, cap, "not json"));
    rec.close_all();

    let (segments, _) = assert_consistent(dir.path());
    let db = Db::open(&dir.path().join("kodama.db")).expect("db");
    let rows = db.all_segments().expect("rows");
    assert_eq!(segments, 4, "{rows:#?}");
    let dims: Vec<(i64, i64)> = rows.iter().map(|s| (s.width, s.height)).collect();
    assert_eq!(dims, vec![(160, 120), (160, 120), (320, 240), (320, 240)]);
    // First segment: 30 GOPs = 60 s, cut at the keyframe after a minute.
    assert_eq!(rows[0].frames, 600);
    assert!(rows[1].start_us >= rows[0].end_us - 1_000);
    // The gap between the third and fourth segment is two seconds.
    let gap = rows[3].start_us - rows[2].end_us;
    assert!((1_900_000..=2_100_000).contains(&gap), "gap {gap}");
    for s in &rows {
        let p = ffprobe(&dir.path().join("recordings").join(&s.path));
        assert_eq!(p.packets as i64, s.frames);
        assert_eq!((p.width as i64, p.height as i64), (s.width, s.height));
    }
    let cam_row = db.cameras().expect("cameras")[0].id;
    let tel = db
        .aux_between(AuxKind::Telemetry, cam_row, 0, i64::MAX, 10)
        .expect("telemetry");
    assert_eq!(tel.len(), 1);
    assert!(tel[0].json.contains("52.1"));
    assert_eq!(
        db.aux_between(AuxKind::Event, cam_row, 0, i64::MAX, 10)
            .expect("events")
            .len(),
        1
    );
    assert_eq!(
        rec.stats()
            .aux_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A GOP the camera kept while offline (store-and-forward) brings the
/// audio captured during it: the backfill segment has the Opus track, and
/// each fragment holds its GOP's audio run on the video's time origin, in
/// time order with the video.
#[test]
fn backfilled_gops_carry_their_audio_into_the_segment() {
    use bytes::Bytes;
    use kodama_proto::{AudioCodec, AudioInfo, Frame, FrameFlags};
    use kodama_server::feed::{FeedEvent, Group};

    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let mut rec = recorder(dir.path(), clock.clone());
    let gops = encode(320, 240, 10, 10, 3);
    let cam = camera_id(3);
    let mut hello = online(cam, "yard", &gops, 320, 240, 10);
    if let FeedEvent::CameraOnline { info, .. } = &mut hello {
        info.audio = Some(AudioInfo {
            codec: AudioCodec::Opus,
            sample_rate: 48_000,
            channels: 1,
            pre_skip: 312,
        });
    }
    rec.handle_event(hello);
    // No live video on this connection: wall times are the camera clock.
    let capture0 = T0 as u64 + 5_000_000;
    for (i, aus) in gops.iter().enumerate() {
        let start = capture0 + i as u64 * 1_000_000;
        let FeedEvent::Group { group: live, .. } = group(cam, i as u64, aus, start, 10) else {
            panic!("group() makes a Group event");
        };
        let mut frames: Vec<Arc<Frame>> = live
            .frames
            .iter()
            .map(|f| {
                Arc::new(Frame {
                    channel: Channel::Backfill,
                    ..Frame::clone(f)
                })
            })
            .collect();
        // 50 Opus packets of 20 ms (TOC 0x08: SILK narrowband, 20 ms, one
        // frame), arriving slightly out of capture order.
        let mut packets: Vec<u64> = (0..50).collect();
        packets.swap(3, 4);
        frames.extend(packets.into_iter().map(|n| {
            Arc::new(Frame {
                channel: Channel::Audio,
                flags: FrameFlags::empty(),
                capture_us: start + n * 20_000,
                sequence: i as u64 * 50 + n,
                payload: Bytes::from_static(&[0x08, 0xab, 0xcd]),
            })
        }));
        clock.advance(Duration::from_secs(1));
        rec.handle_event(FeedEvent::Backfill {
            camera: cam,
            group: Arc::new(Group {
                id: 100 + i as u64,
                frames,
                truncated: false,
            }),
        });
    }
    rec.close_all();
    assert_consistent(dir.path());
    let db = Db::open(&dir.path().join("kodama.db")).expect("db");
    let segs = db.all_segments().expect("rows");
    assert_eq!(segs.len(), 1);
    assert!(segs[0].backfill);
    assert_eq!(
        segs[0].frames as usize,
        gops.iter().map(Vec::len).sum::<usize>()
    );
    let bytes = std::fs::read(dir.path().join("recordings").join(&segs[0].path)).expect("segment");
    let scan = kodama_media::fmp4::scan_segment(&bytes).expect("parses");
    assert!(
        scan.init.audio.is_some(),
        "the backfill segment has an audio track"
    );
    assert_eq!(scan.fragments.len(), gops.len());
    for (i, f) in scan.fragments.iter().enumerate() {
        let run = f.audio.as_ref().expect("each GOP's audio run");
        let i = i as u64;
        assert_eq!(run.samples.len(), 50, "fragment {i}");
        // Video at i s (90 kHz), its audio at the same instant (48 kHz),
        // 50 × 960 samples with no holes.
        assert_eq!(f.header.base_decode_time, i * 90_000);
        assert_eq!(run.base_decode_time, i * 48_000);
        assert_eq!(run.duration(), 50 * 960);
    }
}

/// A relay's batch of recorded telemetry and events (sent again after an
/// outage): each row is stored once however often it comes, rows that are
/// not JSON are dropped, and every batch is acknowledged so the relay's
/// watermark moves on.
#[test]
fn a_relays_batch_of_telemetry_and_events_is_stored_once_and_acknowledged() {
    use kodama_proto::{Frame, FrameFlags, Stored};
    use kodama_server::feed::{FeedEvent, StoredAcks};

    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(SimulatedClock::new(T0));
    let mut rec = recorder(dir.path(), clock);
    let acks = StoredAcks::default();
    rec.set_acks(acks.clone());
    let cam = camera_id(7);
    let (_route, mut acked) = acks.register(cam);
    let row = |channel, sequence, json: &str| Frame {
        channel,
        flags: FrameFlags::empty(),
        capture_us: T0 as u64 + sequence,
        sequence,
        payload: bytes::Bytes::copy_from_slice(json.as_bytes()),
    };
    let batch = |id| FeedEvent::AuxBatch {
        camera: cam,
        id,
        frames: Arc::new(vec![
            row(Channel::Event, 1, r#"{"type":"motion_start"}"#),
            row(Channel::Telemetry, 2, r#"{"gps":{"lat":52.1}}"#),
            row(Channel::Event, 3, "not json"),
        ]),
    };
    // Live first, then the batch that carries the same row, then the batch
    // again (its acknowledgement was lost).
    rec.handle_event(aux(
        cam,
        Channel::Event,
        T0 as u64 + 1,
        r#"{"type":"motion_start"}"#,
    ));
    rec.handle_event(batch(5));
    rec.handle_event(batch(6));
    assert_eq!(acked.try_recv().ok(), Some(Stored::Aux { id: 5 }));
    assert_eq!(acked.try_recv().ok(), Some(Stored::Aux { id: 6 }));

    let db = Db::open(&dir.path().join("kodama.db")).expect("index");
    let cam_row = db.cameras().expect("cameras")[0].id;
    let events = db
        .aux_between(AuxKind::Event, cam_row, i64::MIN, i64::MAX, 10)
        .expect("events");
    assert_eq!(
        events.len(),
        1,
        "one event however often it came: {events:?}"
    );
    assert_eq!(events[0].capture_us, Some(T0 + 1));
    let telemetry = db
        .aux_between(AuxKind::Telemetry, cam_row, i64::MIN, i64::MAX, 10)
        .expect("telemetry");
    assert_eq!(telemetry.len(), 1);
    assert_eq!(
        rec.stats()
            .aux_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the invalid row of each batch"
    );
}
