//! Shared by the recording and API tests: real H.264 from OpenH264, feed
//! events for a simulated camera, ffprobe, and index/disk consistency checks.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use kodama_media::h264;
use kodama_net::{EndpointId, SecretKey};
use kodama_proto::{CameraInfo, Channel, Codec, Frame, FrameFlags};
use kodama_server::db::Db;
use kodama_server::feed::{FeedEvent, Group};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

/// Encoded GOPs of a moving test pattern: `gops` groups of `gop_len` frames.
pub fn encode(width: usize, height: usize, fps: u32, gop_len: u32, gops: usize) -> Vec<Vec<Bytes>> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(300_000))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .usage_type(UsageType::CameraVideoRealTime)
        .intra_frame_period(IntraFramePeriod::from_num_frames(gop_len))
        .skip_frames(false)
        .scene_change_detect(false);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).expect("encoder");
    let mut yuv = vec![0u8; width * height * 3 / 2];
    let mut out: Vec<Vec<Bytes>> = Vec::new();
    let total = gops * gop_len as usize;
    for i in 0..total {
        for y in 0..height {
            for x in 0..width {
                yuv[y * width + x] = ((x + y + i * 4) % 256) as u8;
            }
        }
        let (y, uv) = yuv.split_at(width * height);
        let (u, v) = uv.split_at(width * height / 4);
        let src = YUVSlices::new((y, u, v), (width, height), (width, width / 2, width / 2));
        let au = Bytes::from(enc.encode(&src).expect("encode").to_vec());
        if h264::is_idr(&au) || out.is_empty() {
            out.push(Vec::new());
        }
        out.last_mut().expect("group").push(au);
    }
    out
}

/// A deterministic camera id.
pub fn camera_id(n: u8) -> EndpointId {
    SecretKey::from_bytes(&[n; 32]).public()
}

/// CameraOnline for encoded video.
pub fn online(
    camera: EndpointId,
    name: &str,
    gops: &[Vec<Bytes>],
    width: u16,
    height: u16,
    fps: u32,
) -> FeedEvent {
    let (sps, pps) = h264::parameter_sets(&gops[0][0]);
    FeedEvent::CameraOnline {
        camera,
        info: CameraInfo {
            name: name.into(),
            codec: Codec::H264,
            width,
            height,
            fps_milli: fps * 1000,
            bitrate_kbps: 300,
            sps: Bytes::copy_from_slice(sps.expect("sps")),
            pps: Bytes::copy_from_slice(pps.expect("pps")),
            firmware: "test".into(),
            audio: None,
        },
    }
}

/// A Group event: the access units `aus` captured from `capture_us` at `fps`.
pub fn group(camera: EndpointId, id: u64, aus: &[Bytes], capture_us: u64, fps: u32) -> FeedEvent {
    let interval = 1_000_000 / u64::from(fps);
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
                capture_us: capture_us + i as u64 * interval,
                sequence: id * 1000 + i as u64,
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

/// A telemetry or event frame.
pub fn aux(camera: EndpointId, channel: Channel, capture_us: u64, json: &str) -> FeedEvent {
    FeedEvent::Aux {
        camera,
        frame: Arc::new(Frame {
            channel,
            flags: FrameFlags::empty(),
            capture_us,
            sequence: 0,
            payload: Bytes::copy_from_slice(json.as_bytes()),
        }),
    }
}

/// What ffprobe says about a file's video stream.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u64,
    pub height: u64,
    pub packets: u64,
    pub duration_s: f64,
}

/// Runs ffprobe (which CI installs; `apt-get install ffmpeg`).
pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-select_streams",
            "v:0",
            "-show_entries",
        ])
        .arg("stream=codec_name,width,height,nb_read_packets:format=duration")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = &v["streams"][0];
    Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().into(),
        width: s["width"].as_u64().unwrap_or(0),
        height: s["height"].as_u64().unwrap_or(0),
        packets: s["nb_read_packets"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        duration_s: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
    }
}

/// Decodes the whole file with ffmpeg; panics on any decoder error.
pub fn decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks that index and disk agree: every row's file exists with exactly
/// the indexed length, fragments tile the file from the init segment to the
/// end and parse, and no file is unindexed. Returns (segments, fragments).
pub fn assert_consistent(data_dir: &Path) -> (usize, usize) {
    let db = Db::open(&data_dir.join("kodama.db")).expect("db");
    let root = data_dir.join("recordings");
    let mut files = std::collections::BTreeSet::new();
    collect(&root, &root, &mut files);
    let rows = db.all_segments().expect("segments");
    let mut fragments = 0;
    for s in &rows {
        assert!(files.remove(&s.path), "row {} has no file", s.path);
        let buf = std::fs::read(root.join(&s.path)).expect("read");
        assert_eq!(
            buf.len() as i64,
            s.bytes,
            "{}: file length vs index",
            s.path
        );
        let scan = kodama_media::fmp4::scan_segment(&buf).expect("scans");
        assert_eq!(
            scan.complete_len,
            buf.len() as u64,
            "{}: trailing bytes",
            s.path
        );
        let frs = db.fragments(s.id).expect("fragments");
        assert_eq!(
            frs.len(),
            scan.fragments.len(),
            "{}: fragment rows vs file",
            s.path
        );
        let mut at = s.init_bytes;
        for (row, f) in frs.iter().zip(&scan.fragments) {
            assert_eq!(row.offset, at);
            assert_eq!(row.offset as u64, f.offset);
            assert_eq!(row.len as u64, f.len);
            assert_eq!(row.frames as usize, f.header.samples.len());
            assert!(f.header.samples[0].keyframe);
            at += row.len;
        }
        assert_eq!(at, s.bytes);
        assert_eq!(s.frames, frs.iter().map(|f| f.frames).sum::<i64>());
        fragments += frs.len();
    }
    assert!(files.is_empty(), "unindexed files: {files:?}");
    (rows.len(), fragments)
}

fn collect(root: &Path, dir: &Path, out: &mut std::collections::BTreeSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}
