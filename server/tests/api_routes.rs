//! The HTTP API over loopback: every route, the token, bad input (reversed
//! and malformed ranges, unknown camera and segment, bad Range header),
//! segment Range requests, export validated by ffprobe, and the `view`
//! playback client.

mod recording_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kodama_proto::Channel;
use kodama_server::api::{self, client, ApiConfig, ApiState, CameraStatus};
use kodama_server::recorder::{Recorder, RecorderConfig, SimulatedClock};
use recording_support::*;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_750_000_000_000_000; // 2025-06-15T15:06:40Z

fn at(offset_s: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(T0 + offset_s * 1_000_000) * 1000,
    )
    .expect("time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

struct Fixture {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    addr: SocketAddr,
    token: String,
    cancel: CancellationToken,
    endpoint: String,
    frames: usize,
}

/// Records 6 s (GOPs 1-3), a missing GOP (a 2 s gap), then 4 s more, with
/// telemetry and an event, and serves the API on a free loopback port.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_owned();
    let clock = Arc::new(SimulatedClock::new(T0));
    let mut rec = Recorder::open(
        RecorderConfig {
            data_dir: data.clone(),
            ..RecorderConfig::default()
        },
        clock.clone(),
    )
    .expect("open");
    let gops = encode(160, 120, 10, 20, 5);
    let cam = camera_id(4);
    rec.handle_event(online(cam, "gate", &gops, 160, 120, 10));
    let mut frames = 0;
    for (i, g) in gops.iter().enumerate() {
        let id = if i < 3 { i as u64 + 1 } else { i as u64 + 2 };
        let capture = if i < 3 {
            i as u64 * 2_000_000
        } else {
            (i as u64 + 1) * 2_000_000
        };
        // The GOP arrives as its last frame (1.9 s in) is captured.
        clock.set_wall_us(T0 + capture as i64 + 1_900_000);
        rec.handle_event(group(cam, id, g, capture, 10));
        frames += g.len();
    }
    rec.handle_event(aux(
        cam,
        Channel::Telemetry,
        1_000_000,
        r#"{"battery_v":12.6}"#,
    ));
    rec.handle_event(aux(cam, Channel::Event, 3_000_000, r#"{"type":"motion"}"#));
    let status = rec.status();
    rec.close_all();
    drop(rec);
    let endpoint = cam.to_string();
    let live_ep = endpoint.clone();
    let live = move || {
        vec![CameraStatus {
            endpoint: live_ep.clone(),
            name: "gate".into(),
            online: true,
            last_seen_us: Some(T0 + 12_000_000),
        }]
    };
    let state =
        ApiState::open(&data, &ApiConfig::default(), Arc::new(live), status).expect("state");
    let token = std::fs::read_to_string(data.join("api-token"))
        .expect("token")
        .trim()
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    tokio::spawn(api::serve_on(listener, state, cancel.clone()));
    Fixture {
        _dir: dir,
        data,
        addr,
        token,
        cancel,
        endpoint,
        frames,
    }
}

/// Raw request with optional token and extra header; returns status,
/// headers and body.
async fn request(
    f: &Fixture,
    path: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> (u16, hyper::HeaderMap, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(f.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn json(f: &Fixture, path: &str) -> (u16, serde_json::Value) {
    let (s, _, b) = request(f, path, Some(&f.token), None).await;
    (
        s,
        serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_route_and_bad_input() {
    let f = fixture().await;
    let ep = &f.endpoint;
    let q = format!("start={}&end={}", at(-10), at(30));

    // Health needs no token; everything else does.
    let (s, _, b) = request(&f, "/api/v1/health", None, None).await;
    assert_eq!((s, b), (200, br#"{"status":"ok"}"#.to_vec()));
    for path in [
        "/api/v1/cameras".to_string(),
        format!("/api/v1/cameras/{ep}/recordings?{q}"),
        format!("/api/v1/cameras/{ep}/events?{q}"),
        format!("/api/v1/cameras/{ep}/telemetry?{q}"),
        format!("/api/v1/cameras/{ep}/export?{q}"),
        "/api/v1/segments/1".to_string(),
    ] {
        let (s, h, b) = request(&f, &path, None, None).await;
        assert_eq!(s, 401, "{path}");
        assert_eq!(
            h.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json error");
        assert_eq!(v["error"], "missing_token");
        let (s, _, _) = request(&f, &path, Some("wrong"), None).await;
        assert_eq!(s, 401, "{path}");
    }

    // Cameras: live status merged with the index.
    let (s, v) = json(&f, "/api/v1/cameras").await;
    assert_eq!(s, 200);
    let c = &v["cameras"][0];
    assert_eq!(
        (c["id"].as_str(), c["name"].as_str()),
        (Some(ep.as_str()), Some("gate"))
    );
    assert_eq!(
        (c["online"].as_bool(), c["recording"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(c["last_seen"]
        .as_str()
        .is_some_and(|t| t.starts_with("2025-06-15T15:06")));

    // Recordings: two segments and the gaps around and between them; by name too.
    let (s, v) = json(&f, &format!("/api/v1/cameras/gate/recordings?{q}")).await;
    assert_eq!(s, 200, "{v}");
    let segs = v["segments"].as_array().expect("segments");
    assert_eq!(segs.len(), 2);
    let gaps = v["gaps"].as_array().expect("gaps");
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    assert_eq!(gaps[1]["start"].as_str(), Some(at(6).as_str()));
    assert_eq!(gaps[1]["end"].as_str(), Some(at(8).as_str()));
    let total: u64 = segs.iter().map(|s| s["frames"].as_u64().unwrap_or(0)).sum();
    assert_eq!(total as usize, f.frames);

    // Telemetry and events by time.
    let (s, v) = json(&f, &format!("/api/v1/cameras/{ep}/telemetry?{q}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["data"]["battery_v"], 12.6);
    assert_eq!(v["items"][0]["time"].as_str(), Some(at(1).as_str()));
    let (_, v) = json(&f, &format!("/api/v1/cameras/{ep}/events?{q}")).await;
    assert_eq!(v["items"][0]["data"]["type"], "motion");
    let (_, v) = json(
        &f,
        &format!("/api/v1/cameras/{ep}/events?start={}&end={}", at(4), at(5)),
    )
    .await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0));

    // Bad input: clear 4xx JSON errors.
    for (path, status, code) in [
        (
            format!(
                "/api/v1/cameras/{ep}/recordings?start={}&end={}",
                at(5),
                at(1)
            ),
            400,
            "reversed_range",
        ),
        (
            format!(
                "/api/v1/cameras/{ep}/recordings?start={}&end={}",
                at(5),
                at(5)
            ),
            400,
            "reversed_range",
        ),
        (
            format!(
                "/api/v1/cameras/{ep}/recordings?start=yesterday&end={}",
                at(5)
            ),
            400,
            "bad_time",
        ),
        (
            format!("/api/v1/cameras/{ep}/events?end={}", at(5)),
            400,
            "missing_parameter",
        ),
        (
            format!("/api/v1/cameras/nobody/recordings?{q}"),
            404,
            "unknown_camera",
        ),
        (
            format!("/api/v1/cameras/nobody/export?{q}"),
            404,
            "unknown_camera",
        ),
        (
            format!(
                "/api/v1/cameras/{ep}/export?start={}&end={}",
                at(-100),
                at(-50)
            ),
            404,
            "no_recordings",
        ),
        (
            format!(
                "/api/v1/cameras/{ep}/export?start={}&end={}",
                at(0),
                at(90_000)
            ),
            400,
            "range_too_long",
        ),
        ("/api/v1/segments/999".to_string(), 404, "unknown_segment"),
        ("/api/v1/segments/abc".to_string(), 400, "bad_segment_id"),
        ("/api/v1/nothing".to_string(), 404, "no_route"),
    ] {
        let (s, v) = json(&f, &path).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{path}: {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Segment: whole file, a Range, a suffix Range, an unsatisfiable Range.
    let id = segs[0]["id"].as_i64().expect("id");
    let bytes = segs[0]["bytes"].as_u64().expect("bytes");
    let path = format!("/api/v1/segments/{id}");
    let (s, h, whole) = request(&f, &path, Some(&f.token), None).await;
    assert_eq!((s, whole.len() as u64), (200, bytes));
    assert_eq!(
        h.get("content-type").map(|v| v.as_bytes()),
        Some(&b"video/mp4"[..])
    );
    assert_eq!(
        h.get("accept-ranges").map(|v| v.as_bytes()),
        Some(&b"bytes"[..])
    );
    let seg_file = f.data.join("seg.mp4");
    std::fs::write(&seg_file, &whole).expect("write");
    assert_eq!(ffprobe(&seg_file).packets, 60);
    let (s, h, part) = request(&f, &path, Some(&f.token), Some("bytes=100-199")).await;
    assert_eq!((s, part.as_slice()), (206, &whole[100..200]));
    assert_eq!(
        h.get("content-range").and_then(|v| v.to_str().ok()),
        Some(format!("bytes 100-199/{bytes}").as_str())
    );
    let (s, _, tail) = request(&f, &path, Some(&f.token), Some("bytes=-10")).await;
    assert_eq!((s, tail.as_slice()), (206, &whole[whole.len() - 10..]));
    let (s, h, _) = request(&f, &path, Some(&f.token), Some(&format!("bytes={bytes}-"))).await;
    assert_eq!(s, 416);
    assert_eq!(
        h.get("content-range").and_then(|v| v.to_str().ok()),
        Some(format!("bytes */{bytes}").as_str())
    );

    // Export across the gap: every frame, playable.
    let (s, h, mp4) = request(
        &f,
        &format!("/api/v1/cameras/{ep}/export?{q}"),
        Some(&f.token),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        h.get("content-type").map(|v| v.as_bytes()),
        Some(&b"video/mp4"[..])
    );
    let exp = f.data.join("export.mp4");
    std::fs::write(&exp, &mp4).expect("write");
    let p = ffprobe(&exp);
    assert_eq!(p.packets as usize, f.frames);
    assert_eq!((p.codec.as_str(), p.width, p.height), ("h264", 160, 120));
    decodes_cleanly(&exp);

    // Token rotation: the old token stops working at once.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let path_tok = client::rotate_token(&f.data, &ApiConfig::default()).expect("rotate");
    let new = std::fs::read_to_string(path_tok)
        .expect("token")
        .trim()
        .to_owned();
    assert_ne!(new, f.token);
    let (s, _, _) = request(&f, "/api/v1/cameras", Some(&f.token), None).await;
    assert_eq!(s, 401);
    let (s, _, _) = request(&f, "/api/v1/cameras", Some(&new), None).await;
    assert_eq!(s, 200);

    // The playback client (`kodama-server view`) saves a range: 2.5 s to 5 s
    // starts at the keyframe at 2 s and ends at 5 s: 30 frames.
    let cfg = ApiConfig {
        listen: f.addr,
        ..ApiConfig::default()
    };
    let out = f.data.join("view.mp4");
    let (name, n) = client::view(
        &f.data,
        &cfg,
        None,
        &at(2).replace("06:42", "06:42.5"),
        &at(5),
        Some(&out),
    )
    .await
    .expect("view");
    assert_eq!(name, out.display().to_string());
    assert!(n > 0);
    assert_eq!(ffprobe(&out).packets, 30);
    let err = client::view(&f.data, &cfg, Some("gate"), &at(5), &at(2), Some(&out)).await;
    assert!(matches!(err, Err(client::ClientError::BadRange(_))));
    let err = client::view(&f.data, &cfg, Some("nobody"), &at(2), &at(5), Some(&out)).await;
    assert!(
        matches!(err, Err(client::ClientError::Status { status: 404, .. })),
        "{err:?}"
    );
    f.cancel.cancel();
}
