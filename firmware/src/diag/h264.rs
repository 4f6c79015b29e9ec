//! `diag h264 FILE|-`: what an H.264 Annex-B stream holds (a capture from the
//! encoder, or what the server recorded), as one JSON document.
//!
//! IDR indices count coded pictures in decoding order, from 0.

use std::io::{Read, Write};

use kodama_media::h264::{StreamScanner, StreamSummary};
use serde::{Deserialize, Serialize};

use super::{for_each_chunk, write_json_line, DiagError};

/// At most this many IDR indices are listed (a day of 1 s GOPs).
const MAX_IDR: usize = 100_000;

/// The report `diag h264` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H264Report {
    /// Profile name (Annex A.2), e.g. `High`, `Constrained Baseline`.
    pub profile: Option<String>,
    /// `profile_idc`.
    pub profile_idc: Option<u8>,
    /// Level (Table A-1), e.g. `3.1`.
    pub level: Option<String>,
    /// Cropped width in pixels.
    pub width: Option<u32>,
    /// Cropped height in pixels.
    pub height: Option<u32>,
    /// Coded pictures.
    pub frames: u64,
    /// Indices of IDR pictures, in decoding order.
    pub idr_frames: Vec<u64>,
    /// NAL units.
    pub nal_units: u64,
    /// SPS NAL units (more than the IDR count suggests a resolution change).
    pub sps_count: u64,
    /// SPS NAL units that did not parse.
    pub bad_sps: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl H264Report {
    fn new(s: StreamSummary, bytes: u64) -> Self {
        H264Report {
            profile: s.sps.map(|i| i.profile_name().to_string()),
            profile_idc: s.sps.map(|i| i.profile_idc),
            level: s.sps.map(|i| i.level_name()),
            width: s.sps.map(|i| i.width),
            height: s.sps.map(|i| i.height),
            frames: s.frames,
            idr_frames: s.idr_frames,
            nal_units: s.nal_units,
            sps_count: s.sps_count,
            bad_sps: s.bad_sps,
            bytes,
        }
    }
}

/// Scans `input` to its end and writes the report to `out`. Fails with
/// [`DiagError::NotH264`] (after printing the report) when the input holds
/// no SPS and no picture.
pub fn run(input: impl Read, mut out: impl Write) -> Result<H264Report, DiagError> {
    let mut scanner = StreamScanner::new(MAX_IDR);
    let bytes = for_each_chunk(input, |chunk| scanner.push(chunk))?;
    let report = H264Report::new(scanner.finish(), bytes);
    write_json_line(&mut out, &report)?;
    out.flush().map_err(DiagError::Write)?;
    if report.sps_count == 0 && report.frames == 0 {
        return Err(DiagError::NotH264 { bytes });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::encoder::{Encoder, EncoderConfig, IntraFramePeriod};
    use openh264::formats::YUVSlices;
    use openh264::OpenH264API;
    use std::path::Path;
    use std::process::Command;

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/h264")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn report(data: &[u8]) -> H264Report {
        let mut out = Vec::new();
        let r = run(data, &mut out).expect("diag");
        let printed: H264Report = serde_json::from_slice(&out).expect("json");
        assert_eq!(printed, r);
        r
    }

    /// A moving gradient, so the encoder has something to code.
    fn frame(w: usize, h: usize, n: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let y = (0..w * h)
            .map(|i| ((i % w + i / w + n * 3) % 256) as u8)
            .collect();
        (y, vec![128; w * h / 4], vec![128; w * h / 4])
    }

    /// Real openh264 output: 30 frames, IDR every 8 (its intra period) plus one forced.
    #[test]
    fn openh264_stream() {
        let (w, h) = (320, 180);
        let config = EncoderConfig::new().intra_frame_period(IntraFramePeriod::from_num_frames(8));
        let mut enc =
            Encoder::with_api_config(OpenH264API::from_source(), config).expect("encoder");
        let mut stream = Vec::new();
        for n in 0..30 {
            if n == 13 {
                enc.force_intra_frame();
            }
            let (y, u, v) = frame(w, h, n);
            let yuv = YUVSlices::new((&y, &u, &v), (w, h), (w, w / 2, w / 2));
            enc.encode(&yuv).expect("encode").write_vec(&mut stream);
        }
        let r = report(&stream);
        assert_eq!(
            (r.width, r.height),
            (Some(320), Some(180)),
            "cropped from 320x192"
        );
        assert_eq!(r.frames, 30);
        assert_eq!(r.idr_frames, vec![0, 8, 13, 21, 29]);
        assert!(r.profile.is_some() && r.level.is_some());
    }

    #[test]
    fn x264_high_profile_with_b_frames() {
        let r = report(&fixture("x264_high_bframes_176x144_keyint10.h264"));
        assert_eq!(r.profile.as_deref(), Some("High"));
        assert_eq!(r.level.as_deref(), Some("1.1"));
        assert_eq!((r.width, r.height), (Some(176), Some(144)));
        assert_eq!(r.frames, 25);
        assert_eq!(r.idr_frames, vec![0, 10, 20]);
    }

    #[test]
    fn x264_baseline_with_cropping() {
        let r = report(&fixture("x264_baseline_200x120_cropped_keyint5.h264"));
        assert_eq!(r.profile.as_deref(), Some("Constrained Baseline"));
        assert_eq!(r.level.as_deref(), Some("2.1"));
        assert_eq!(
            (r.width, r.height),
            (Some(200), Some(120)),
            "coded as 208x128"
        );
        assert_eq!(r.frames, 12);
        assert_eq!(r.idr_frames, vec![0, 5, 10]);
    }

    #[test]
    fn x264_four_slices_per_picture_count_once() {
        let r = report(&fixture("x264_main_4slices_320x240_keyint3.h264"));
        assert_eq!(r.profile.as_deref(), Some("Main"));
        assert_eq!(r.frames, 6);
        assert!(r.nal_units >= 6 * 4, "{} NAL units", r.nal_units);
        assert_eq!(r.idr_frames, vec![0, 3]);
    }

    #[test]
    fn not_h264_is_an_error() {
        let mut out = Vec::new();
        let err = run(&b"ftypisom not annex b"[..], &mut out).expect_err("not h264");
        assert!(matches!(err, DiagError::NotH264 { bytes: 20 }), "{err}");
    }

    /// Live ffmpeg encoders, when ffmpeg is installed: libx264 at an odd
    /// size with B-frames, checked against ffprobe's own packet flags.
    #[test]
    fn ffmpeg_encoders_agree_with_ffprobe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("x.h264");
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
            .args([
                "-i",
                "testsrc=size=424x240:rate=30",
                "-frames:v",
                "40",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3"])
            .args([
                "-x264-params",
                "keyint=15:min-keyint=15:scenecut=0",
                "-f",
                "h264",
            ])
            .arg(&out)
            .status();
        match ok {
            Ok(s) if s.success() => {}
            Ok(s) => {
                // CI installs ffmpeg with libx264: there this is a failure.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must have ffmpeg with libx264 ({s})"
                );
                println!("SKIPPED: ffmpeg could not encode with libx264 ({s})");
                return;
            }
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must have ffmpeg ({e}); apt-get install ffmpeg"
                );
                println!(
                    "SKIPPED: ffmpeg not available ({e}); apt-get install ffmpeg to run this test"
                );
                return;
            }
        }
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_packets",
                "-show_entries",
                "packet=flags",
                "-of",
                "csv",
            ])
            .arg(&out)
            .output()
            .expect("ffprobe comes with ffmpeg");
        let flags = String::from_utf8_lossy(&probe.stdout);
        let keys: Vec<u64> = flags
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains('K'))
            .map(|(i, _)| i as u64)
            .collect();
        let r = report(&std::fs::read(&out).expect("read"));
        assert_eq!((r.width, r.height), (Some(424), Some(240)));
        assert_eq!(r.frames, flags.lines().count() as u64);
        assert_eq!(r.idr_frames, keys);
        assert_eq!(r.idr_frames, vec![0, 15, 30]);
    }
}
