//! The live pipeline records: a camera streams, the server's recorder writes
//! fMP4 segments, and `kodama-server view --from … --to …` exports a range
//! that ffprobe accepts.

mod common;

use std::time::Duration;

use common::*;
use kodama_net::SecretKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_video_is_recorded_and_exported() {
    let server = TestServer::start().await;
    let key = SecretKey::generate();
    server.allow_camera(&key, "rec");
    let started = time::OffsetDateTime::now_utc();
    let mut cam = start_camera("rec", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cam.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended = time::OffsetDateTime::now_utc();
    let fmt = &time::format_description::well_known::Rfc3339;
    let (from, to) = (
        started.format(fmt).expect("time"),
        ended.format(fmt).expect("time"),
    );

    let mut api = server.config.api.clone();
    api.listen = server.server.api_addr;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("rec.mp4");
    let (_, bytes) = kodama_server::api::client::view(
        &server.config.server.data_dir,
        &api,
        Some("rec"),
        &from,
        &to,
        Some(&out),
    )
    .await
    .expect("export");
    assert!(bytes > 10_000, "a few seconds of video: {bytes} bytes");

    if let Some(s) = probe_video(&out) {
        assert_eq!(s["codec_name"], "h264");
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(320), Some(240))
        );
        let frames: u64 = s["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .expect("count");
        // ~4 s at 30 fps were streamed; the export covers whole GOPs of it.
        assert!((60..=200).contains(&frames), "recorded frames: {frames}");
    }
    server.stop().await;
}
