//! The HTTP API (axum): camera list, recordings and gaps, telemetry and
//! events by time, segment files with Range support, and MP4 export.
//! JSON everywhere except media; errors are `{"error": code, "message": …}`
//! with a 4xx status. Every route but health needs
//! `Authorization: Bearer <token>` (see [`token`]) or a web session cookie
//! (see [`crate::web::auth`]).
//!
//! Routes (all `GET`):
//! ```text
//! /api/v1/health
//! /api/v1/cameras
//! /api/v1/cameras/{camera}/recordings?start=&end=   (RFC 3339)
//! /api/v1/cameras/{camera}/events?start=&end=
//! /api/v1/cameras/{camera}/telemetry?start=&end=
//! /api/v1/cameras/{camera}/export?start=&end=       video/mp4
//! /api/v1/segments/{id}                             video/mp4, Range
//! POST /api/v1/cameras/{camera}/commands            {"command": "keyframe"|"reboot"|"snapshot"}
//! POST /api/v1/cameras/{camera}/update              body: a signed RAUC bundle (admin only)
//! GET  /api/v1/cameras/{camera}/update              the update's phase, progress and history
//! ```
//! `{camera}` is a camera's endpoint id or its name on this server (the
//! allowlist's record, never the name a camera gives itself).
//!
//! # Layout
//! * [`token`]: the bearer token file, creation and rotation.
//! * [`range`]: the `Range` header.
//! * [`export`]: planning and producing an export.
//! * [`client`]: the `kodama-server view` playback client.

pub mod client;
pub mod export;
pub mod range;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::db::{AuxKind, CameraRow, Db, DbError};
use crate::recorder::{self, RecordingStatus};
use crate::sessions::CommandOutcome;
use crate::web::accounts::{AccountError, Accounts};
use kodama_proto::{Command, CommandResult};

/// Most rows a telemetry or events query returns.
pub const MAX_AUX_ROWS: i64 = 10_000;
/// Longest range an export may cover.
pub const MAX_EXPORT_US: i64 = 24 * 3600 * 1_000_000;
/// Gap between consecutive segments below which they count as contiguous.
pub const GAP_TOLERANCE_US: i64 = 500_000;

/// `[api]` in the server configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on (default 127.0.0.1:8080: this machine only).
    pub listen: SocketAddr,
    /// Token file (default `<data>/api-token`).
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Map tile URL template for the web app's camera map
    /// (`https://…/{z}/{x}/{y}.png`); none: an offline coordinate grid.
    pub map_tile_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            map_tile_url: None,
        }
    }
}

impl ApiConfig {
    /// The token file for a data directory.
    pub fn token_path(&self, data_dir: &Path) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("api-token"))
    }
}

/// What the hub knows about a camera right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraStatus {
    /// Endpoint id, as printed by iroh.
    pub endpoint: String,
    /// Name on this server (the allowlist's record).
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Last time the hub heard from it, µs since the Unix epoch.
    pub last_seen_us: Option<i64>,
}

/// An admin's command as the API takes it.
pub type CommandFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CommandOutcome, CommandFailure>> + Send>,
>;

/// Why a command did not reach a camera or got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandFailure {
    /// Not connected (or its queue is full).
    #[error("{0}")]
    Unavailable(String),
    /// No acknowledgement in time.
    #[error("the camera did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Live camera status, implemented by the hub.
pub trait LiveStatus: Send + Sync + 'static {
    /// All cameras the hub knows.
    fn cameras(&self) -> Vec<CameraStatus>;

    /// The endpoint id of the camera the server's record calls `name`.
    fn resolve_camera(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }

    /// Firmware update jobs, where the server delivers updates.
    fn updates(&self) -> Option<Arc<crate::updates::Updates>> {
        None
    }

    /// Sends `command` to the camera `endpoint`; resolves with its answer.
    fn command(&self, endpoint: &str, command: Command) -> CommandFuture {
        let _ = (endpoint, command);
        Box::pin(async { Err(CommandFailure::Unavailable("commands are not wired".into())) })
    }
}

impl<F> LiveStatus for F
where
    F: Fn() -> Vec<CameraStatus> + Send + Sync + 'static,
{
    fn cameras(&self) -> Vec<CameraStatus> {
        self()
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The token file could not be created or read.
    #[error("API token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The index could not be opened.
    #[error("recording index: {0}")]
    Db(#[from] DbError),
    /// The accounts database could not be opened.
    #[error("web accounts: {0}")]
    Accounts(#[from] AccountError),
    /// The server failed while running.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

struct Inner {
    db: Mutex<Db>,
    root: PathBuf,
    live: Arc<dyn LiveStatus>,
    recording: RecordingStatus,
    token: token::TokenStore,
    accounts: Arc<Accounts>,
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("root", &self.0.root)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Opens the index under `data_dir` and the token (creating it at first
    /// start). Open the [`recorder::Recorder`] first: it reconciles the index.
    pub fn open(
        data_dir: &Path,
        cfg: &ApiConfig,
        live: Arc<dyn LiveStatus>,
        recording: RecordingStatus,
    ) -> Result<ApiState, ApiError> {
        let path = cfg.token_path(data_dir);
        let token = token::TokenStore::open(path.clone())
            .map_err(|source| ApiError::Token { path, source })?;
        let db = Db::open(&recorder::db_path(data_dir))?;
        let accounts = Arc::new(Accounts::open(data_dir)?);
        Ok(ApiState(Arc::new(Inner {
            db: Mutex::new(db),
            root: recorder::recordings_dir(data_dir),
            live,
            recording,
            token,
            accounts,
        })))
    }

    /// The endpoint id of the camera named `name` on the server's record.
    pub(crate) fn resolve_camera(&self, name: &str) -> Option<String> {
        self.0.live.resolve_camera(name)
    }

    /// Whether `presented` is the bearer token.
    pub fn check_token(&self, presented: &str) -> bool {
        self.0.token.check(presented)
    }

    /// The web accounts.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.0.accounts
    }

    /// The token file in use.
    pub fn token_path(&self) -> &Path {
        self.0.token.path()
    }

    /// Runs `f` on the index on the blocking pool.
    pub(crate) async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db, &Path) -> Result<T, ApiFailure> + Send + 'static,
    ) -> Result<T, ApiFailure> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            f(&db, &inner.root)
        })
        .await
        .map_err(|e| ApiFailure::internal(format!("task: {e}")))?
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiFailure {
    /// A failure with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<DbError> for ApiFailure {
    fn from(e: DbError) -> Self {
        ApiFailure::internal(format!("index: {e}"))
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// The API's routes on `state`.
pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/api/v1/cameras", get(cameras))
        .route("/api/v1/cameras/{camera}/recordings", get(recordings))
        .route("/api/v1/cameras/{camera}/events", get(events))
        .route("/api/v1/cameras/{camera}/telemetry", get(telemetry))
        .route("/api/v1/cameras/{camera}/export", get(export_route))
        .route("/api/v1/segments/{id}", get(segment))
        .route("/api/v1/cameras/{camera}/commands", post(command_route))
        .route(
            "/api/v1/cameras/{camera}/update",
            post(update_route).get(update_status_route),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::web::auth::require_auth,
        ));
    Router::new()
        .route("/api/v1/health", get(health))
        .merge(authed)
        .fallback(|| async { ApiFailure::not_found("no_route", "no such route") })
        .with_state(state)
}

/// Serves the API on a bound listener until `cancel` fires (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> Result<(), ApiError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, token = %state.token_path().display(), "HTTP API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(ApiError::Serve)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) fn rfc3339(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub(crate) fn parse_time(name: &'static str, value: Option<&str>) -> Result<i64, ApiFailure> {
    let v = value.ok_or_else(|| {
        ApiFailure::bad_request(
            "missing_parameter",
            format!("`{name}` is required (RFC 3339)"),
        )
    })?;
    let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|e| {
        ApiFailure::bad_request(
            "bad_time",
            format!("`{name}`={v:?} is not an RFC 3339 time: {e}"),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .map_err(|_| ApiFailure::bad_request("bad_time", format!("`{name}` out of range")))
}

/// `start`/`end` query parameters.
#[derive(Debug, Deserialize)]
struct RangeQuery {
    start: Option<String>,
    end: Option<String>,
}

impl RangeQuery {
    fn parse(&self) -> Result<(i64, i64), ApiFailure> {
        let start = parse_time("start", self.start.as_deref())?;
        let end = parse_time("end", self.end.as_deref())?;
        if end <= start {
            return Err(ApiFailure::bad_request(
                "reversed_range",
                "`end` must be after `start`",
            ));
        }
        Ok((start, end))
    }
}

/// A camera by endpoint id, or by its name on the server's record; only a
/// name the record no longer has falls back to the index's last known name.
pub(crate) fn find_camera(
    db: &Db,
    key: &str,
    resolved: Option<&str>,
) -> Result<CameraRow, ApiFailure> {
    let rows = db.cameras()?;
    let endpoint = resolved.unwrap_or(key);
    rows.iter()
        .find(|c| c.endpoint == endpoint)
        .cloned()
        .or_else(|| {
            resolved
                .is_none()
                .then(|| rows.iter().find(|c| c.name == key).cloned())
                .flatten()
        })
        .ok_or_else(|| {
            ApiFailure::not_found(
                "unknown_camera",
                format!("no camera with id or name {key:?}"),
            )
        })
}

async fn cameras(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiFailure> {
    let rows = state
        .with_db(|db, _| {
            let mut out = Vec::new();
            for row in db.cameras()? {
                let latest = db
                    .latest_aux(AuxKind::Telemetry, row.id)?
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t.json).ok());
                let field = |name: &str| {
                    latest
                        .as_ref()
                        .and_then(|v| v.get(name).cloned())
                        .filter(|b| !b.is_null())
                };
                let (backlog, stream) = (field("backlog"), field("stream"));
                out.push((row, backlog, stream));
            }
            Ok(out)
        })
        .await?;
    let live = state.0.live.cameras();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (row, backlog, stream) in &rows {
        let l = live.iter().find(|l| l.endpoint == row.endpoint);
        let last = l
            .and_then(|l| l.last_seen_us)
            .unwrap_or(row.last_seen_us)
            .max(row.last_seen_us);
        let rec = state.0.recording.get(&row.endpoint).unwrap_or_default();
        seen.insert(row.endpoint.clone());
        out.push(json!({
            "id": row.endpoint,
            "name": l.map_or(row.name.as_str(), |l| l.name.as_str()),
            "online": l.is_some_and(|l| l.online),
            "last_seen": rfc3339(last),
            "recording": rec.recording,
            "fragments_dropped": rec.fragments_dropped,
            "backlog": backlog,
            "stream": stream,
            "backfill": {
                "fragments": rec.backfill_fragments,
                "last": rec.last_backfill_us.map(rfc3339),
            },
        }));
    }
    // Cameras online but not yet recorded (recorder not reached yet).
    for l in live.iter().filter(|l| !seen.contains(&l.endpoint)) {
        out.push(json!({
            "id": l.endpoint,
            "name": l.name,
            "online": l.online,
            "last_seen": l.last_seen_us.map(rfc3339),
            "recording": false,
            "fragments_dropped": 0,
        }));
    }
    Ok(Json(json!({ "cameras": out })))
}

async fn recordings(
    State(state): State<ApiState>,
    UrlPath(camera): UrlPath<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let (start, end) = q.parse()?;
    let resolved = state.0.live.resolve_camera(&camera);
    let (cam, segments) = state
        .with_db(move |db, _| {
            let cam = find_camera(db, &camera, resolved.as_deref())?;
            let segs = db.segments_between(cam.id, start, end)?;
            Ok((cam, segs))
        })
        .await?;
    let mut gaps = Vec::new();
    let mut cursor = start;
    let mut list = Vec::new();
    for s in &segments {
        if s.start_us - cursor > GAP_TOLERANCE_US {
            gaps.push(json!({"start": rfc3339(cursor), "end": rfc3339(s.start_us)}));
        }
        cursor = cursor.max(s.end_us);
        list.push(json!({
            "id": s.id,
            "start": rfc3339(s.start_us),
            "end": rfc3339(s.end_us),
            "bytes": s.bytes,
            "frames": s.frames,
            "fragments": s.fragments,
            "codec": s.codec,
            "width": s.width,
            "height": s.height,
            "recording": s.open,
            "backfill": s.backfill,
            "url": format!("/api/v1/segments/{}", s.id),
        }));
    }
    if end - cursor > GAP_TOLERANCE_US {
        gaps.push(json!({"start": rfc3339(cursor), "end": rfc3339(end)}));
    }
    Ok(Json(json!({
        "camera": cam.endpoint,
        "start": rfc3339(start),
        "end": rfc3339(end),
        "segments": list,
        "gaps": gaps,
    })))
}

async fn aux(
    state: ApiState,
    camera: String,
    q: RangeQuery,
    kind: AuxKind,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let (start, end) = q.parse()?;
    let resolved = state.0.live.resolve_camera(&camera);
    let (cam, rows) = state
        .with_db(move |db, _| {
            let cam = find_camera(db, &camera, resolved.as_deref())?;
            let rows = db.aux_between(kind, cam.id, start, end, MAX_AUX_ROWS + 1)?;
            Ok((cam, rows))
        })
        .await?;
    let truncated = rows.len() as i64 > MAX_AUX_ROWS;
    let items: Vec<_> = rows
        .iter()
        .take(MAX_AUX_ROWS as usize)
        .map(|r| {
            json!({
                "time": rfc3339(r.time_us),
                "data": serde_json::from_str::<serde_json::Value>(&r.json).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    Ok(Json(
        json!({"camera": cam.endpoint, "items": items, "truncated": truncated}),
    ))
}

async fn events(
    State(state): State<ApiState>,
    UrlPath(camera): UrlPath<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    aux(state, camera, q, AuxKind::Event).await
}

async fn telemetry(
    State(state): State<ApiState>,
    UrlPath(camera): UrlPath<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    aux(state, camera, q, AuxKind::Telemetry).await
}

async fn export_route(
    State(state): State<ApiState>,
    UrlPath(camera): UrlPath<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiFailure> {
    let (start, end) = q.parse()?;
    if end - start > MAX_EXPORT_US {
        return Err(ApiFailure::bad_request(
            "range_too_long",
            "an export covers at most 24 hours",
        ));
    }
    let resolved = state.0.live.resolve_camera(&camera);
    let (cam, plan) = state
        .with_db(move |db, root| {
            let cam = find_camera(db, &camera, resolved.as_deref())?;
            let plan = export::plan(db, root, cam.id, start, end)?;
            Ok((cam, plan))
        })
        .await?;
    let Some(plan) = plan else {
        return Err(ApiFailure::not_found(
            "no_recordings",
            "nothing was recorded in that range",
        ));
    };
    // A small bounded queue between the file reader and the socket: the
    // reader waits for a slow client instead of buffering the export.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let result = export::produce(&plan, |chunk| tx.blocking_send(Ok(chunk)).is_ok());
        if let Err(e) = result {
            tracing::warn!("export failed: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let filename = format!(
        "attachment; filename=\"{}-{}.mp4\"",
        sanitize(&cam.name),
        rfc3339(start).replace(':', "-")
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    if let Ok(v) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// How long an admin's command may wait for the camera's answer.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `POST /api/v1/cameras/{camera}/commands` body. `tier` takes `mode`
/// (`auto`, `cap`, `pin`) and, for cap and pin, `rung` (0 = lowest).
#[derive(Debug, Deserialize)]
struct CommandBody {
    command: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    rung: Option<u8>,
}

/// The tier limit a `tier` command body asks for.
fn tier_limit(mode: Option<&str>, rung: Option<u8>) -> Result<kodama_proto::TierLimit, ApiFailure> {
    use kodama_proto::TierLimit;
    let need_rung = || {
        rung.ok_or_else(|| {
            ApiFailure::bad_request(
                "missing_rung",
                "cap and pin need \"rung\" (0 = the lowest tier)",
            )
        })
    };
    match mode {
        Some("auto") => Ok(TierLimit::Auto),
        Some("cap") => Ok(TierLimit::Cap(need_rung()?)),
        Some("pin") => Ok(TierLimit::Pin(need_rung()?)),
        other => Err(ApiFailure::bad_request(
            "unknown_mode",
            format!("tier \"mode\" must be auto, cap or pin, got {other:?}"),
        )),
    }
}

async fn command_route(
    State(state): State<ApiState>,
    axum::Extension(who): axum::Extension<crate::web::auth::Principal>,
    UrlPath(camera): UrlPath<String>,
    Json(body): Json<CommandBody>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    // Commands act on a camera: only the owner's token or an admin session.
    who.require_admin()?;
    let command = match body.command.as_str() {
        "keyframe" => Command::RequestKeyframe,
        "reboot" => Command::Reboot,
        "snapshot" => Command::Snapshot,
        "tier" => Command::SetTier(tier_limit(body.mode.as_deref(), body.rung)?),
        other => {
            return Err(ApiFailure::bad_request(
                "unknown_command",
                format!("unknown command {other:?}; known: keyframe, reboot, snapshot, tier"),
            ))
        }
    };
    let endpoint = if kodama_net::endpoint::parse_endpoint_id(&camera).is_ok() {
        camera.clone()
    } else {
        state.0.live.resolve_camera(&camera).ok_or_else(|| {
            ApiFailure::not_found("unknown_camera", format!("no camera named {camera:?}"))
        })?
    };
    let outcome = tokio::time::timeout(COMMAND_TIMEOUT, state.0.live.command(&endpoint, command))
        .await
        .map_err(|_| CommandFailure::Timeout(COMMAND_TIMEOUT))
        .and_then(|r| r)
        .map_err(|e| match e {
            CommandFailure::Timeout(_) => {
                ApiFailure::new(StatusCode::GATEWAY_TIMEOUT, "no_answer", e.to_string())
            }
            _ => ApiFailure::new(StatusCode::CONFLICT, "camera_unavailable", e.to_string()),
        })?;
    let result = match outcome.result {
        CommandResult::Ok => "ok",
        CommandResult::Unsupported => "unsupported",
        CommandResult::Failed => "failed",
    };
    Ok(Json(json!({
        "camera": endpoint,
        "command": body.command,
        "result": result,
        "detail": outcome.detail,
    })))
}

/// The endpoint id of `camera` (an id or the server's name for it).
fn camera_endpoint(state: &ApiState, camera: &str) -> Result<kodama_net::EndpointId, ApiFailure> {
    let endpoint = if kodama_net::endpoint::parse_endpoint_id(camera).is_ok() {
        camera.to_owned()
    } else {
        state.0.live.resolve_camera(camera).ok_or_else(|| {
            ApiFailure::not_found("unknown_camera", format!("no camera named {camera:?}"))
        })?
    };
    kodama_net::endpoint::parse_endpoint_id(&endpoint)
        .map_err(|e| ApiFailure::internal(format!("camera id {endpoint}: {e}")))
}

fn updates_of(state: &ApiState) -> Result<Arc<crate::updates::Updates>, ApiFailure> {
    state.0.live.updates().ok_or_else(|| {
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "updates_unavailable",
            "this server does not deliver updates",
        )
    })
}

/// `POST /api/v1/cameras/{camera}/update`: stores the bundle in the body and
/// starts delivering it. The camera checks its hash and RAUC its signature;
/// the server only moves bytes, on an admin's behalf.
async fn update_route(
    State(state): State<ApiState>,
    axum::Extension(who): axum::Extension<crate::web::auth::Principal>,
    UrlPath(camera): UrlPath<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    who.require_admin()?;
    let id = camera_endpoint(&state, &camera)?;
    let updates = updates_of(&state)?;
    let stored = updates
        .store(body.into_data_stream())
        .await
        .map_err(|e| match e {
            crate::updates::StoreError::Io { .. } => ApiFailure::internal(e.to_string()),
            _ => ApiFailure::bad_request("bad_bundle", e.to_string()),
        })?;
    let (hash, size) = (hex::encode(stored.hash), stored.size);
    updates.start(id, stored);
    let online = state
        .0
        .live
        .cameras()
        .iter()
        .any(|c| c.endpoint == id.to_string() && c.online);
    Ok(Json(json!({
        "camera": id.to_string(),
        "bundle": hash,
        "size": size,
        "online": online,
    })))
}

/// `GET /api/v1/cameras/{camera}/update`.
async fn update_status_route(
    State(state): State<ApiState>,
    UrlPath(camera): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let id = camera_endpoint(&state, &camera)?;
    let updates = updates_of(&state)?;
    let online = state
        .0
        .live
        .cameras()
        .iter()
        .any(|c| c.endpoint == id.to_string() && c.online);
    let mut v =
        serde_json::to_value(updates.view(&id)).map_err(|e| ApiFailure::internal(e.to_string()))?;
    if v.is_null() {
        v = json!({ "phase": "idle", "bundle": null, "history": [] });
    }
    v["camera"] = json!(id.to_string());
    v["online"] = json!(online);
    Ok(Json(v))
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

async fn segment(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let id: i64 = id.parse().map_err(|_| {
        ApiFailure::bad_request(
            "bad_segment_id",
            format!("segment id {id:?} is not a number"),
        )
    })?;
    let (path, len) = state
        .with_db(move |db, root| {
            let seg = db.segment(id)?.ok_or_else(|| {
                ApiFailure::not_found("unknown_segment", format!("no segment {id}"))
            })?;
            Ok((root.join(&seg.path), seg.bytes.max(0) as u64))
        })
        .await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiFailure::not_found("segment_gone", "the segment file was deleted"))?;
    let requested = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(range::RangeRequest::Full, |h| range::parse(h, len));
    let (status, start, count) = match requested {
        range::RangeRequest::Full => (StatusCode::OK, 0, len),
        range::RangeRequest::Partial(r) => {
            (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1)
        }
        range::RangeRequest::Unsatisfiable => {
            let mut resp = ApiFailure::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the segment has {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    // Serve only the indexed length: bytes past it may be a fragment being
    // written (invariant 5).
    let stream =
        futures::stream::unfold((file, start, count), |(mut file, pos, left)| async move {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; left.min(256 * 1024) as usize];
            let r = async {
                file.seek(std::io::SeekFrom::Start(pos)).await?;
                file.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(())
            }
            .await;
            match r {
                Ok(()) => {
                    let n = buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), (file, pos + n, left - n)))
                }
                Err(e) => Some((Err(e), (file, pos, 0))),
            }
        });
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, start + count - 1, len))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok((status, h, Body::from_stream(stream)).into_response())
}
