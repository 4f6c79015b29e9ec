//! Operations: what the server is doing right now, for Prometheus
//! (`GET /metrics`, text exposition format) and for `kodama-server top`
//! (`GET /api/v1/overview`, JSON). Both are rendered from one [`Overview`]
//! gathered at request time from the hub, the recorder and the file system,
//! so the two can never disagree and nothing is computed when nobody asks.
//!
//! `/metrics` needs the API token (or a web session) like every other
//! route, except from the addresses the owner lists in `[metrics] allow`
//! (CIDR blocks, e.g. the Prometheus host): those scrape without one.
//!
//! # Layout
//! * [`rate`]: the per-second rate meter behind bitrate and fps.
//! * [`recent`]: the in-memory ring of recent log events.

pub mod rate;
pub mod recent;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::{Deserialize, Serialize};

pub use rate::RateMeter;

use crate::allowlist::{Allowlist, PeerRole};
use crate::api::ApiState;
use crate::feed::FeedSender;
use crate::hub::Hub;
use crate::recorder::{RecorderStats, RecordingStatus};

/// `[metrics]` in the server configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Addresses that may read `/metrics` without the API token, as CIDR
    /// blocks (`"127.0.0.1/32"`, `"10.0.0.0/24"`, `"::1/128"`) or single
    /// addresses. Empty (the default): everyone needs the token.
    pub allow: Vec<AllowedNet>,
}

/// One `[metrics] allow` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedNet(ipnet::IpNet);

impl TryFrom<String> for AllowedNet {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(|n| AllowedNet(n.trunc()))
            .map_err(|_| {
                format!("{text:?} is not an address or CIDR block (e.g. \"127.0.0.1/32\")")
            })
    }
}

impl From<AllowedNet> for String {
    fn from(n: AllowedNet) -> String {
        n.0.to_string()
    }
}

impl MetricsConfig {
    /// Whether `peer` may scrape without a token. An IPv4 peer reaching an
    /// IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow.iter().any(|n| n.0.contains(&peer))
    }
}

/// What the overview is gathered from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Server name.
    pub name: String,
    /// Live cameras.
    pub hub: Arc<Hub>,
    /// Camera names on the server's record.
    pub allowlist: Arc<Allowlist>,
    /// The recorder's counters.
    pub recorder: Arc<RecorderStats>,
    /// Per-camera recording state.
    pub recording: RecordingStatus,
    /// The recorder's queue (depth, drops).
    pub recorder_feed: FeedSender,
    /// The data directory (free space).
    pub data_dir: PathBuf,
    /// When the server started.
    pub started: Instant,
    /// `[metrics]`.
    pub config: MetricsConfig,
}

/// The server at one moment (`/api/v1/overview`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Server name.
    pub name: String,
    /// `kodama-server` version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Every camera the server knows, by name.
    pub cameras: Vec<CameraOverview>,
    /// The recorder.
    pub recorder: RecorderOverview,
    /// The data directory's file system (absent if it cannot be read).
    pub disk: Option<DiskOverview>,
    /// Recent log events, oldest first.
    pub events: Vec<recent::LogEntry>,
}

/// One camera.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraOverview {
    /// Endpoint id.
    pub id: String,
    /// Name on the server's record.
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Last heard from, µs since the Unix epoch (0: never).
    pub last_seen_us: u64,
    /// Stream as announced: width × height, fps, firmware.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// Firmware version.
    pub firmware: String,
    /// Video frames per second arriving (last 5 s).
    pub fps: f64,
    /// Video bits per second arriving (last 5 s).
    pub bitrate_bps: f64,
    /// Video frames received since the server started.
    pub video_frames: u64,
    /// Video payload bytes received since the server started.
    pub video_bytes: u64,
    /// Frames that arrived for a superseded group and were dropped.
    pub stale_frames: u64,
    /// Viewers watching now (terminal viewers and browsers).
    pub viewers: u64,
    /// The camera's uplink as its telemetry reports it (`wifi`, `cellular`,
    /// `ethernet`, `none`), with the interface.
    pub link: Option<String>,
    /// The bitrate tier its rate control runs at (telemetry).
    pub tier: Option<String>,
    /// The bitrate the camera reports encoding at, kbit/s (telemetry).
    pub encoder_kbps: Option<u64>,
    /// A segment is open and receiving video.
    pub recording: bool,
    /// Age of the newest recorded video, seconds (how far the recording
    /// lags live; absent before the first fragment).
    pub recording_lag_s: Option<f64>,
    /// GOPs of this camera the recorder dropped.
    pub recorder_drops: u64,
}

/// The recorder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecorderOverview {
    /// GOPs and events waiting in its queue.
    pub queue: u64,
    /// The queue's capacity.
    pub queue_capacity: u64,
    /// GOPs dropped because the queue was full.
    pub queue_drops: u64,
    /// Fragments written and indexed.
    pub fragments_written: u64,
    /// Fragments the recorder dropped (disk errors, bad input).
    pub fragments_dropped: u64,
    /// Bytes written to segment files.
    pub bytes_written: u64,
    /// Segments deleted by retention.
    pub retention_deletions: u64,
    /// Full-disk conditions met.
    pub disk_full: u64,
    /// Index updates that failed.
    pub index_errors: u64,
}

/// Space on the data directory's file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskOverview {
    /// Bytes available to the server.
    pub free_bytes: u64,
    /// File system size.
    pub total_bytes: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the link and tier from a telemetry document. Link: the firmware's
/// `link {kind, iface}`; tier: `tier`, or `abr.tier`, whatever its type.
fn telemetry_fields(payload: &[u8]) -> (Option<String>, Option<String>, Option<u64>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return (None, None, None);
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let link = v.get("link").and_then(|l| {
        let kind = l.get("kind").and_then(text)?;
        Some(match l.get("iface").and_then(text) {
            Some(iface) => format!("{kind} ({iface})"),
            None => kind,
        })
    });
    let tier = v
        .get("tier")
        .and_then(text)
        .or_else(|| v.get("abr").and_then(|a| a.get("tier")).and_then(text));
    let kbps = v.get("bitrate_kbps").and_then(serde_json::Value::as_u64);
    (link, tier, kbps)
}

fn disk(dir: &std::path::Path) -> Option<DiskOverview> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = s.fragment_size() as u64;
    Some(DiskOverview {
        free_bytes: (s.blocks_available() as u64).saturating_mul(frag),
        total_bytes: (s.blocks() as u64).saturating_mul(frag),
    })
}

impl Sources {
    /// Gathers the overview now (with the newest `events` log entries).
    pub fn overview(&self, events: usize) -> Overview {
        let now_ms = unix_ms(SystemTime::now());
        let mut cameras: Vec<CameraOverview> = self
            .hub
            .cameras()
            .into_iter()
            .filter_map(|status| {
                let track = self
                    .hub
                    .find(&kodama_proto::CameraSelector::Id(*status.id.as_bytes()))?;
                let c = &track.counters;
                let (fps, bitrate_bps) = c.rates(now_ms);
                let (link, tier, encoder_kbps) = c
                    .telemetry()
                    .map(|f| telemetry_fields(&f.payload))
                    .unwrap_or_default();
                let id = status.id.to_string();
                let rec = self.recording.get(&id).unwrap_or_default();
                Some(CameraOverview {
                    name: self
                        .allowlist
                        .name_of(&status.id, PeerRole::Camera)
                        .unwrap_or(status.info.name.clone()),
                    id,
                    online: status.online,
                    last_seen_us: unix_ms(status.last_seen) * 1000,
                    width: status.info.width,
                    height: status.info.height,
                    firmware: status.info.firmware.clone(),
                    fps,
                    bitrate_bps,
                    video_frames: c.video_frames.load(Ordering::Relaxed),
                    video_bytes: c.video_bytes.load(Ordering::Relaxed),
                    stale_frames: track.stale_frames.load(Ordering::Relaxed),
                    viewers: c.viewers.load(Ordering::Relaxed),
                    link: if status.online { link } else { None },
                    tier: if status.online { tier } else { None },
                    encoder_kbps: if status.online { encoder_kbps } else { None },
                    recording: rec.recording,
                    recording_lag_s: rec
                        .last_fragment_us
                        .map(|us| (now_ms as f64 / 1000.0 - us as f64 / 1e6).max(0.0)),
                    recorder_drops: rec.fragments_dropped,
                })
            })
            .collect();
        cameras.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let r = &self.recorder;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let tx = &self.recorder_feed.tx;
        Overview {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            cameras,
            recorder: RecorderOverview {
                queue: (tx.max_capacity() - tx.capacity()) as u64,
                queue_capacity: tx.max_capacity() as u64,
                queue_drops: load(&self.recorder_feed.stats.groups_dropped),
                fragments_written: load(&r.fragments_written),
                fragments_dropped: load(&r.fragments_dropped),
                bytes_written: load(&r.file_bytes),
                retention_deletions: load(&r.segments_deleted),
                disk_full: load(&r.disk_full),
                index_errors: load(&r.index_errors),
            },
            disk: disk(&self.data_dir),
            events: recent::latest(events),
        }
    }
}

/// Renders the overview in the Prometheus text exposition format.
pub fn prometheus_text(o: &Overview) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(OverviewCollector(o.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct OverviewCollector(Overview);

type Labels = Vec<(&'static str, String)>;

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for OverviewCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let o = &self.0;
        let cam = |c: &CameraOverview| -> Labels {
            vec![("camera", c.name.clone()), ("id", c.id.clone())]
        };
        let per_camera = |f: fn(&CameraOverview) -> f64| {
            o.cameras
                .iter()
                .map(move |c| (cam(c), f(c)))
                .collect::<Vec<_>>()
        };
        let per_camera_total = |f: fn(&CameraOverview) -> u64| {
            o.cameras
                .iter()
                .map(move |c| (cam(c), f(c)))
                .collect::<Vec<_>>()
        };
        let one = |v: f64| [(Labels::new(), v)];
        let one_total = |v: u64| [(Labels::new(), v)];
        gauge(
            &mut enc,
            "kodama_uptime_seconds",
            "Seconds since the server started.",
            one(o.uptime_s),
        )?;
        gauge(
            &mut enc,
            "kodama_cameras_online",
            "Cameras connected now.",
            one(o.cameras.iter().filter(|c| c.online).count() as f64),
        )?;
        gauge(
            &mut enc,
            "kodama_cameras_known",
            "Cameras the server knows (paired or recorded).",
            one(o.cameras.len() as f64),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_online",
            "1 if the camera is connected.",
            per_camera(|c| f64::from(u8::from(c.online))),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_bitrate_bps",
            "Video bits per second arriving (last 5 s).",
            per_camera(|c| c.bitrate_bps),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_fps",
            "Video frames per second arriving (last 5 s).",
            per_camera(|c| c.fps),
        )?;
        counter(
            &mut enc,
            "kodama_camera_video_frames",
            "Video frames received.",
            per_camera_total(|c| c.video_frames),
        )?;
        counter(
            &mut enc,
            "kodama_camera_video_bytes",
            "Video payload bytes received.",
            per_camera_total(|c| c.video_bytes),
        )?;
        counter(
            &mut enc,
            "kodama_camera_stale_frames",
            "Frames dropped because their GOP was superseded.",
            per_camera_total(|c| c.stale_frames),
        )?;
        counter(
            &mut enc,
            "kodama_camera_recorder_drops",
            "GOPs of the camera the recorder dropped.",
            per_camera_total(|c| c.recorder_drops),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_viewers",
            "Viewers watching the camera now.",
            per_camera(|c| c.viewers as f64),
        )?;
        gauge(
            &mut enc,
            "kodama_viewers",
            "Viewers watching any camera now.",
            one(o.cameras.iter().map(|c| c.viewers).sum::<u64>() as f64),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_link_info",
            "The camera's uplink (telemetry): 1 for the link in use.",
            o.cameras.iter().filter_map(|c| {
                let mut l = cam(c);
                l.push(("link", c.link.clone()?));
                Some((l, 1.0))
            }),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_tier_info",
            "The camera's bitrate tier (telemetry): 1 for the tier in use.",
            o.cameras.iter().filter_map(|c| {
                let mut l = cam(c);
                l.push(("tier", c.tier.clone()?));
                Some((l, 1.0))
            }),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_encoder_kbps",
            "The bitrate the camera reports encoding at (telemetry).",
            o.cameras
                .iter()
                .filter_map(|c| Some((cam(c), c.encoder_kbps? as f64))),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_recording",
            "1 if a segment is open and receiving video.",
            per_camera(|c| f64::from(u8::from(c.recording))),
        )?;
        gauge(
            &mut enc,
            "kodama_camera_recording_lag_seconds",
            "Age of the newest recorded video.",
            o.cameras
                .iter()
                .filter_map(|c| Some((cam(c), c.recording_lag_s?))),
        )?;
        let r = &o.recorder;
        gauge(
            &mut enc,
            "kodama_recorder_queue",
            "GOPs and events waiting for the recorder.",
            one(r.queue as f64),
        )?;
        gauge(
            &mut enc,
            "kodama_recorder_queue_capacity",
            "The recorder queue's capacity.",
            one(r.queue_capacity as f64),
        )?;
        counter(
            &mut enc,
            "kodama_recorder_queue_drops",
            "GOPs dropped because the recorder was behind.",
            one_total(r.queue_drops),
        )?;
        counter(
            &mut enc,
            "kodama_recorder_fragments_written",
            "Fragments written and indexed.",
            one_total(r.fragments_written),
        )?;
        counter(
            &mut enc,
            "kodama_recorder_fragments_dropped",
            "Fragments the recorder dropped.",
            one_total(r.fragments_dropped),
        )?;
        counter(
            &mut enc,
            "kodama_recorder_written_bytes",
            "Bytes written to segment files.",
            one_total(r.bytes_written),
        )?;
        counter(
            &mut enc,
            "kodama_retention_deletions",
            "Segments deleted by retention.",
            one_total(r.retention_deletions),
        )?;
        counter(
            &mut enc,
            "kodama_recorder_disk_full",
            "Full-disk conditions met.",
            one_total(r.disk_full),
        )?;
        counter(
            &mut enc,
            "kodama_recorder_index_errors",
            "Index updates that failed.",
            one_total(r.index_errors),
        )?;
        if let Some(d) = o.disk {
            gauge(
                &mut enc,
                "kodama_disk_free_bytes",
                "Bytes free for the server on the data directory's file system.",
                one(d.free_bytes as f64),
            )?;
            gauge(
                &mut enc,
                "kodama_disk_size_bytes",
                "Size of the data directory's file system.",
                one(d.total_bytes as f64),
            )?;
        }
        Ok(())
    }
}

/// Log events included in an overview.
pub const OVERVIEW_EVENTS: usize = 50;

/// `GET /metrics` (token or allowed address) and `GET /api/v1/overview`
/// (token or web session).
pub fn router(sources: Arc<Sources>, api: ApiState) -> Router {
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .route_layer(middleware::from_fn_with_state(
                (sources.clone(), api.clone()),
                allowed_or_authed,
            ));
    let overview = Router::new()
        .route("/api/v1/overview", get(overview))
        .route_layer(middleware::from_fn_with_state(
            api,
            crate::web::auth::require_auth,
        ));
    metrics.merge(overview).with_state(sources)
}

async fn allowed_or_authed(
    State((sources, api)): State<(Arc<Sources>, ApiState)>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if peer.is_some_and(|p| sources.config.allows(p)) {
        return next.run(req).await;
    }
    crate::web::auth::require_auth(State(api), req, next).await
}

async fn metrics(State(sources): State<Arc<Sources>>) -> Response {
    let text = tokio::task::spawn_blocking(move || prometheus_text(&sources.overview(0)))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn overview(State(sources): State<Arc<Sources>>) -> Response {
    match tokio::task::spawn_blocking(move || sources.overview(OVERVIEW_EVENTS)).await {
        Ok(o) => Json(o).into_response(),
        Err(e) => crate::api::ApiFailure::internal(format!("task: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_parses_blocks_and_addresses_and_matches_mapped_ipv4() {
        let cfg: MetricsConfig =
            toml::from_str("allow = [\"127.0.0.1/32\", \"10.1.0.0/16\", \"::1\"]").expect("parses");
        assert!(cfg.allows("127.0.0.1".parse().expect("ip")));
        assert!(cfg.allows("10.1.200.3".parse().expect("ip")));
        assert!(cfg.allows("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(cfg.allows("::1".parse().expect("ip")));
        assert!(!cfg.allows("10.2.0.1".parse().expect("ip")));
        assert!(!cfg.allows("127.0.0.2".parse().expect("ip")));
        assert!(!MetricsConfig::default().allows("127.0.0.1".parse().expect("ip")));
        let err = toml::from_str::<MetricsConfig>("allow = [\"localhost\"]").expect_err("bad");
        assert!(err.to_string().contains("not an address or CIDR"), "{err}");
    }

    #[test]
    fn telemetry_link_and_tier_are_read_whatever_their_shape() {
        let (link, tier, kbps) = telemetry_fields(
            br#"{"link":{"kind":"cellular","iface":"wwan0","up":["wwan0"]},"bitrate_kbps":800,"abr":{"tier":2}}"#,
        );
        assert_eq!(link.as_deref(), Some("cellular (wwan0)"));
        assert_eq!(tier.as_deref(), Some("2"));
        assert_eq!(kbps, Some(800));
        let (link, tier, _) = telemetry_fields(br#"{"link":{"kind":"wifi"},"tier":"720p-2M"}"#);
        assert_eq!(link.as_deref(), Some("wifi"));
        assert_eq!(tier.as_deref(), Some("720p-2M"));
        assert_eq!(telemetry_fields(b"not json"), (None, None, None));
    }

    #[test]
    fn prometheus_text_has_typed_families_with_camera_labels() {
        let o = Overview {
            cameras: vec![CameraOverview {
                id: "abc".into(),
                name: "porch \"east\"".into(),
                online: true,
                bitrate_bps: 4e6,
                video_frames: 42,
                link: Some("wifi (wlan0)".into()),
                ..Default::default()
            }],
            recorder: RecorderOverview {
                retention_deletions: 3,
                ..Default::default()
            },
            disk: Some(DiskOverview {
                free_bytes: 1000,
                total_bytes: 2000,
            }),
            ..Default::default()
        };
        let text = prometheus_text(&o);
        assert!(
            text.contains("# TYPE kodama_cameras_online gauge\nkodama_cameras_online 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "kodama_camera_bitrate_bps{camera=\"porch \\\"east\\\"\",id=\"abc\"} 4000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kodama_camera_video_frames counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "kodama_camera_video_frames_total{camera=\"porch \\\"east\\\"\",id=\"abc\"} 42"
            ),
            "{text}"
        );
        assert!(text.contains("link=\"wifi (wlan0)\"} 1"), "{text}");
        assert!(
            text.contains("kodama_retention_deletions_total 3"),
            "{text}"
        );
        assert!(text.contains("kodama_disk_free_bytes 1000"), "{text}");
    }
}
