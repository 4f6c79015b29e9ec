//! Prometheus metrics on the API listener: scrapeable without the token from
//! the owner's `[metrics] allow` addresses only, and the values follow a
//! streaming camera, a viewer and the recorder.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use kodama_net::SecretKey;

/// `GET path` from the local address `from`; returns status and body.
async fn get_from(from: IpAddr, to: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind source");
    let stream = socket.connect(to).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the sample `name{labels…}` (or bare `name`) whose label set
/// contains `label` (e.g. `camera="porch"`).
fn sample(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            (series == name && label.is_empty())
                || (series.starts_with(&format!("{name}{{")) && series.contains(label))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_from_allowed_addresses_and_follow_a_streaming_camera() {
    let server = TestServer::start_with(|c| {
        c.metrics = toml::from_str("allow = [\"127.0.0.1/32\"]").expect("metrics config");
    })
    .await;
    let api = server.server.api_addr;
    let token = std::fs::read_to_string(&server.server.api_token).expect("token");
    let token = token.trim();
    let allowed: IpAddr = [127, 0, 0, 1].into();
    let other: IpAddr = [127, 0, 0, 2].into();

    // Another address needs the token; the allowed one does not.
    let (status, body) = get_from(other, api, "/metrics", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = get_from(other, api, "/metrics", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = get_from(other, api, "/metrics", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, before) = get_from(allowed, api, "/metrics", None).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        sample(&before, "kodama_cameras_online", ""),
        Some(0.0),
        "{before}"
    );
    assert!(
        sample(&before, "kodama_disk_free_bytes", "").is_some_and(|v| v > 0.0),
        "{before}"
    );
    // The allowance is for /metrics only: the rest of the API still wants the token.
    let (status, _) = get_from(allowed, api, "/api/v1/overview", None).await;
    assert_eq!(status, 401);

    let key = SecretKey::generate();
    server.allow_camera(&key, "porch");
    let mut cam = start_camera("porch", server.dial_addr(), key).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    let (_viewer, _viewer_ep) = viewer(&server, "porch").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, first) = get_from(allowed, api, "/metrics", None).await;
    let cam_label = "camera=\"porch\"";
    assert_eq!(
        sample(&first, "kodama_cameras_online", ""),
        Some(1.0),
        "{first}"
    );
    assert_eq!(
        sample(&first, "kodama_camera_online", cam_label),
        Some(1.0),
        "{first}"
    );
    assert_eq!(
        sample(&first, "kodama_camera_viewers", cam_label),
        Some(1.0),
        "{first}"
    );
    assert_eq!(sample(&first, "kodama_viewers", ""), Some(1.0), "{first}");
    let fps = sample(&first, "kodama_camera_fps", cam_label).expect("fps");
    // 30 fps averaged over 5 s, of which ~2 had passed.
    assert!(fps > 5.0, "{fps}\n{first}");
    assert!(
        sample(&first, "kodama_camera_bitrate_bps", cam_label).is_some_and(|v| v > 10_000.0),
        "{first}"
    );
    let frames_1 = sample(&first, "kodama_camera_video_frames_total", cam_label).expect("frames");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, second) = get_from(allowed, api, "/metrics", None).await;
    let frames_2 = sample(&second, "kodama_camera_video_frames_total", cam_label).expect("frames");
    assert!(frames_2 >= frames_1 + 15.0, "{frames_1} → {frames_2}");
    assert!(
        sample(&second, "kodama_recorder_fragments_written_total", "").is_some_and(|v| v >= 1.0),
        "{second}"
    );
    assert!(
        sample(&second, "kodama_recorder_written_bytes_total", "").is_some_and(|v| v > 1000.0),
        "{second}"
    );
    assert_eq!(
        sample(&second, "kodama_camera_recording", cam_label),
        Some(1.0),
        "{second}"
    );
    assert!(
        sample(&second, "kodama_camera_recording_lag_seconds", cam_label).is_some_and(|v| v < 10.0),
        "{second}"
    );

    // The JSON overview behind `top` says the same, with the token.
    let (status, body) = get_from(other, api, "/api/v1/overview", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let o: kodama_server::metrics::Overview = serde_json::from_str(&body).expect("overview");
    let porch = o.cameras.iter().find(|c| c.name == "porch").expect("porch");
    assert!(porch.online && porch.viewers == 1 && porch.video_frames >= frames_2 as u64);

    cam.stop();
    let offline = async {
        loop {
            let (_, t) = get_from(allowed, api, "/metrics", None).await;
            if sample(&t, "kodama_cameras_online", "") == Some(0.0) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), offline)
        .await
        .expect("the camera goes offline in the metrics");
    server.stop().await;
}
