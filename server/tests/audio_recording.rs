//! Audio end to end: a camera with a (synthetic, speech-like) microphone
//! streams Opus beside H.264; the recorder muxes both tracks into the fMP4
//! segment, and the export carries both. ffprobe sees both tracks, their
//! durations agree within 40 ms, the audio decodes (ffmpeg) to sound, and
//! the speech bitrate stays within 32 kbit/s. Prints the A/V offset and the
//! audio bitrate it measured.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use kodama_net::SecretKey;

/// Whether ffmpeg/ffprobe are here; under CI their absence fails.
fn have_ffmpeg() -> bool {
    let ok = Command::new("ffprobe").arg("-version").output().is_ok()
        && Command::new("ffmpeg").arg("-version").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must have ffmpeg");
        eprintln!("SKIPPED: ffmpeg not installed (apt-get install ffmpeg)");
    }
    ok
}

/// One stream's packets as ffprobe reads them: (pts s, duration s, size bytes).
fn packets(path: &Path, stream: &str) -> (String, Vec<(f64, f64, u64)>) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args([
            "-show_entries",
            "stream=codec_name:packet=pts_time,duration_time,size",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let codec = v["streams"][0]["codec_name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let num = |p: &serde_json::Value, k: &str| -> f64 {
        p[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let list = v["packets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        num(p, "pts_time"),
                        num(p, "duration_time"),
                        num(p, "size") as u64,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (codec, list)
}

/// What one file says about its two tracks.
#[derive(Debug)]
struct AvReport {
    video_s: f64,
    audio_s: f64,
    /// Audio start minus video start, seconds.
    offset_s: f64,
    audio_kbps: f64,
}

fn check_av(path: &Path) -> AvReport {
    let (vcodec, video) = packets(path, "v:0");
    let (acodec, audio) = packets(path, "a:0");
    assert_eq!(vcodec, "h264", "{}", path.display());
    assert_eq!(acodec, "opus", "{}", path.display());
    assert!(
        video.len() > 30 && audio.len() > 50,
        "{} video, {} audio packets",
        video.len(),
        audio.len()
    );
    // ffprobe gives fragmented MP4 packets no duration: a packet lasts
    // until the next one; the last as long as the one before it.
    let span = |p: &[(f64, f64, u64)]| {
        let mut pts: Vec<f64> = p.iter().map(|x| x.0).collect();
        pts.sort_by(f64::total_cmp);
        let n = pts.len();
        let last = if p[n - 1].1.is_finite() {
            p[n - 1].1
        } else {
            pts[n - 1] - pts[n - 2]
        };
        (pts[0], pts[n - 1] + last)
    };
    let (vs, ve) = span(&video);
    let (as_, ae) = span(&audio);
    let audio_bytes: u64 = audio.iter().map(|x| x.2).sum();
    let report = AvReport {
        video_s: ve - vs,
        audio_s: ae - as_,
        offset_s: as_ - vs,
        audio_kbps: audio_bytes as f64 * 8.0 / (ae - as_) / 1000.0,
    };
    // The audio decodes, and is not silence.
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        pcm.status.success() && pcm.stderr.is_empty(),
        "audio decode: {}",
        String::from_utf8_lossy(&pcm.stderr)
    );
    let samples: Vec<i16> = pcm
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let decoded_s = samples.len() as f64 / 48_000.0;
    let rms = (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
        / samples.len().max(1) as f64)
        .sqrt();
    assert!(rms > 300.0, "decoded audio is near silence (rms {rms:.0})");
    assert!(
        (decoded_s - report.audio_s).abs() < 0.1,
        "decoded {decoded_s:.3} s of audio, packets span {:.3} s",
        report.audio_s
    );
    report
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_with_audio_has_both_tracks_in_sync() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "mic");
    let started = time::OffsetDateTime::now_utc();
    let mut cam = start_camera_with_audio("mic", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The export ends here, inside the recording: its last GOP is complete
    // in both tracks. (The segment's own tail is where the camera stopped:
    // its last video frame's length is a guess, and the last audio packet
    // may still have been on its way.)
    let cut = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cam.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let recordings = server.config.server.data_dir.join("recordings");
    let segments = segment_files(&recordings);
    assert!(
        !segments.is_empty(),
        "no segment under {}",
        recordings.display()
    );

    // The export of the whole range (the path `view --from/--to` takes).
    let fmt = &time::format_description::well_known::Rfc3339;
    let mut api = server.config.api.clone();
    api.listen = server.server.api_addr;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let export = out_dir.path().join("mic.mp4");
    kodama_server::api::client::view(
        &server.config.server.data_dir,
        &api,
        Some("mic"),
        &started.format(fmt).expect("time"),
        &cut.format(fmt).expect("time"),
        Some(&export),
    )
    .await
    .expect("export");

    if !have_ffmpeg() {
        server.stop().await;
        return;
    }
    let longest = segments
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a segment");
    for (what, path) in [("segment", longest.as_path()), ("export", export.as_path())] {
        let r = check_av(path);
        println!(
            "audio {what}: video {:.3} s, audio {:.3} s, A/V start offset {:+.1} ms, audio {:.1} kbit/s",
            r.video_s,
            r.audio_s,
            r.offset_s * 1000.0,
            r.audio_kbps
        );
        // The export must agree within 40 ms; the segment's tail may differ
        // by one more video frame (33 ms at 30 fps) and audio packet (20 ms).
        let tolerance = if what == "export" {
            0.040
        } else {
            0.040 + 0.053
        };
        assert!(
            (r.video_s - r.audio_s).abs() <= tolerance,
            "{what}: durations differ by more than {tolerance} s: {r:?}"
        );
        assert!(
            r.offset_s.abs() <= 0.040,
            "{what}: tracks start {r:?} apart"
        );
        assert!(
            r.audio_kbps <= 32.0,
            "{what}: speech audio above 32 kbit/s: {r:?}"
        );
    }
    server.stop().await;
}

/// The terminal viewer writes the live audio as Ogg Opus (`view
/// --audio-output`): ffprobe reads one Opus stream whose duration is what
/// the viewer received, and it decodes to sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_writes_live_audio_as_ogg_opus() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "ogg");
    let mut cam = start_camera_with_audio("ogg", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let (client, _ep) = viewer(&server, "ogg").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = dir.path().join("ogg.h264");
    let audio = dir.path().join("ogg.opus");
    let watched = Duration::from_secs(3);
    let written = kodama_server::viewer::watch(
        client,
        kodama_server::viewer::ViewOptions {
            output: Some(video.clone()),
            audio_output: Some(audio.clone()),
            duration: Some(watched),
            frames: None,
            stats_every: Duration::from_secs(1),
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("watch");
    cam.stop();
    assert!(written > 0, "no video frames");

    // Read back with the Ogg parser: headers, then 20 ms Opus packets whose
    // last granule position counts them all.
    let bytes = std::fs::read(&audio).expect("audio file");
    let mut reader = ogg::reading::PacketReader::new(std::io::Cursor::new(&bytes));
    let mut packets = Vec::new();
    while let Some(p) = reader.read_packet().expect("valid Ogg") {
        packets.push(p);
    }
    assert!(packets.len() > 2 + 50, "{} Ogg packets", packets.len());
    assert_eq!(&packets[0].data[..8], b"OpusHead");
    assert_eq!(&packets[1].data[..8], b"OpusTags");
    let pre_skip = u16::from_le_bytes([packets[0].data[10], packets[0].data[11]]);
    let last = packets.last().expect("packets");
    assert!(last.last_in_stream(), "the stream is not ended");
    let decoded: u64 = packets[2..]
        .iter()
        .map(|p| u64::from(kodama_media::opus::packet_samples(&p.data).expect("Opus packet")))
        .sum();
    assert_eq!(last.absgp_page(), decoded);
    let expected_s = (decoded - u64::from(pre_skip)) as f64 / 48_000.0;
    // Live audio flows the whole time the viewer watched (less the time to
    // its first packet).
    assert!(
        expected_s > watched.as_secs_f64() - 1.0 && expected_s < watched.as_secs_f64() + 0.5,
        "{expected_s:.3} s of audio in a {watched:?} watch"
    );

    if !have_ffmpeg() {
        server.stop().await;
        return;
    }
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .args(["stream=codec_name,sample_rate,channels:format=format_name,duration"])
        .args(["-of", "json"])
        .arg(&audio)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["format"]["format_name"], "ogg");
    assert_eq!(v["streams"][0]["codec_name"], "opus");
    assert_eq!(v["streams"][0]["sample_rate"], "48000");
    let duration: f64 = v["format"]["duration"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a duration");
    assert!(
        (duration - expected_s).abs() < 0.025,
        "ffprobe says {duration:.3} s, the granules {expected_s:.3} s"
    );
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&audio)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        pcm.status.success() && pcm.stderr.is_empty(),
        "audio decode: {}",
        String::from_utf8_lossy(&pcm.stderr)
    );
    let samples = pcm.stdout.len() as f64 / 2.0;
    assert!(
        (samples / 48_000.0 - expected_s).abs() < 0.025,
        "decoded {:.3} s, expected {expected_s:.3} s",
        samples / 48_000.0
    );
    println!("ogg opus: {expected_s:.3} s of audio in {duration:.3} s (ffprobe)");
    server.stop().await;
}
