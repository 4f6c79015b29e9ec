//! The web app embedded in the server: its files (compiled into the binary
//! from `server/web/`, so `cargo build` alone yields a working app that
//! loads nothing from the internet), accounts and sessions, live video over
//! WebSocket, thumbnails, and camera administration. Served on the HTTP
//! API's address, next to the API routes.
//!
//! Routes added to the API's:
//! ```text
//! GET  /  /app.js  /app.css  /icon.svg          the app (no login needed)
//! GET  /api/v1/session                          current session + CSRF token, or 401
//! POST /api/v1/setup   {token,name,password}    first admin (one-time link)
//! POST /api/v1/login   {name,password}          session cookie (throttled)
//! POST /api/v1/logout                           this session
//! POST /api/v1/logout-all                       every session of the account
//! GET|POST /api/v1/accounts, DELETE /api/v1/accounts/{id}      (admin)
//! GET  /api/v1/cameras/{camera}/live            WebSocket: live fMP4 (see [`live`])
//! GET  /api/v1/cameras/{camera}/thumbnail?time= JPEG of the GOP at that time
//! GET  /api/v1/cameras/{camera}/status          live state: online, stream, firmware
//! POST /api/v1/cameras/{camera}/rename {name}   (admin)
//! DELETE /api/v1/cameras/{camera}               revoke: off the allowlist (admin)
//! ```
//!
//! # Layout
//! * [`accounts`]: argon2id accounts, hashed sessions, first-run setup.
//! * [`auth`]: bearer-or-session middleware, CSRF, account routes.
//! * [`limiter`]: login throttling (sans-IO).
//! * [`live`]: the fMP4 live muxer and the WebSocket sender.
//! * [`tls`]: optional HTTPS (`api.tls_cert`/`api.tls_key`).

pub mod accounts;
pub mod auth;
pub mod limiter;
pub mod live;
pub mod tls;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use kodama_proto::CameraSelector;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, AllowlistError, PeerRole};
use crate::api::{self, ApiFailure, ApiState};
use crate::hub::Hub;
use crate::thumbs::{self, ThumbError, Thumbs};
use auth::Principal;
use limiter::LoginLimiter;

const INDEX_HTML: &str = include_str!("../../web/static/index.html");
const APP_CSS: &str = include_str!("../../web/static/app.css");
const ICON_SVG: &str = include_str!("../../web/static/icon.svg");
const APP_JS: &str = include_str!("../../web/dist/app.js");

/// What the web routes share.
#[derive(Clone)]
pub struct WebState {
    /// The API's state (index, token, accounts).
    pub api: ApiState,
    hub: Arc<Hub>,
    allowlist: Arc<Allowlist>,
    thumbs: Arc<Thumbs>,
    limiter: Arc<Mutex<LoginLimiter>>,
    cancel: CancellationToken,
    /// `api.map_tile_url`, handed to the page.
    pub map_tile_url: Option<String>,
    /// Whether cookies get `Secure` (the server speaks TLS itself).
    pub secure_cookies: bool,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState").finish_non_exhaustive()
    }
}

impl WebState {
    /// The web app's state over the API's.
    pub fn new(
        api: ApiState,
        hub: Arc<Hub>,
        allowlist: Arc<Allowlist>,
        data_dir: &std::path::Path,
        cfg: &api::ApiConfig,
        cancel: CancellationToken,
    ) -> Self {
        WebState {
            thumbs: Arc::new(Thumbs::new(
                data_dir,
                crate::recorder::recordings_dir(data_dir),
            )),
            api,
            hub,
            allowlist,
            limiter: Arc::new(Mutex::new(LoginLimiter::new())),
            cancel,
            map_tile_url: cfg.map_tile_url.clone(),
            secure_cookies: cfg.tls_cert.is_some(),
        }
    }

    fn limiter(&self) -> MutexGuard<'_, LoginLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The API's routes plus the web app's.
pub fn router(web: WebState) -> Router {
    let authed = Router::new()
        .route("/api/v1/logout-all", post(auth::logout_all))
        .route(
            "/api/v1/accounts",
            get(auth::list_accounts).post(auth::create_account),
        )
        .route("/api/v1/accounts/{id}", delete(auth::delete_account))
        .route("/api/v1/cameras/{camera}/live", get(live_socket))
        .route("/api/v1/cameras/{camera}/thumbnail", get(thumbnail))
        .route("/api/v1/cameras/{camera}/status", get(camera_status))
        .route("/api/v1/cameras/{camera}/rename", post(rename_camera))
        .route("/api/v1/cameras/{camera}", delete(remove_camera))
        .route_layer(middleware::from_fn_with_state(
            web.api.clone(),
            auth::require_auth,
        ));
    let open = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/icon.svg", get(|| asset(ICON_SVG, "image/svg+xml")))
        .route("/api/v1/session", get(auth::get_session))
        .route("/api/v1/setup", post(auth::setup))
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout));
    api::router(web.api.clone()).merge(authed.merge(open).with_state(web))
}

fn security_headers(h: &mut HeaderMap, tile_origin: Option<&str>) {
    let img = match tile_origin {
        Some(o) => format!("'self' data: blob: {o}"),
        None => "'self' data: blob:".into(),
    };
    let csp = format!(
        "default-src 'self'; img-src {img}; media-src 'self' blob:; connect-src 'self'; \
         style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// `scheme://host[:port]` of a tile URL template.
fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty() && !host.contains(['{', '}', ' ', ';', '\'']))
        .then(|| format!("{scheme}://{host}"))
}

async fn index(State(web): State<WebState>) -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(
        &mut h,
        web.map_tile_url.as_deref().and_then(url_origin).as_deref(),
    );
    (h, INDEX_HTML).into_response()
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change only with the binary; revalidating is cheap on a LAN.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (h, body).into_response()
}

/// The live track of a camera named by endpoint id or by its name on the
/// server's record.
fn find_track(web: &WebState, camera: &str) -> Option<Arc<crate::hub::CameraTrack>> {
    let id = kodama_net::endpoint::parse_endpoint_id(camera)
        .ok()
        .or_else(|| {
            let endpoint = web.api.resolve_camera(camera)?;
            kodama_net::endpoint::parse_endpoint_id(&endpoint).ok()
        });
    match id {
        Some(id) => web.hub.find(&CameraSelector::Id(*id.as_bytes())),
        None => web.hub.find(&CameraSelector::Name(camera.to_owned())),
    }
}

async fn live_socket(
    State(web): State<WebState>,
    UrlPath(camera): UrlPath<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiFailure> {
    if !auth::same_origin(&headers) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "WebSocket upgrades from other sites are refused",
        ));
    }
    let track = find_track(&web, &camera).ok_or_else(|| {
        ApiFailure::not_found("unknown_camera", format!("no live camera {camera:?}"))
    })?;
    let cancel = web.cancel.child_token();
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            let id = track.id;
            let stats = live::serve(socket, track, cancel).await;
            tracing::debug!(camera = %id, sent = stats.sent, dropped = stats.dropped, skips = stats.skips, "browser live view ended");
        }))
}

async fn camera_status(
    State(web): State<WebState>,
    UrlPath(camera): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let track = find_track(&web, &camera).ok_or_else(|| {
        ApiFailure::not_found(
            "unknown_camera",
            format!("{camera:?} has not connected since the server started"),
        )
    })?;
    let s = track.current_status();
    let last_seen_us = s
        .last_seen
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    // Tier, bandwidth estimate and uplink from the camera's latest telemetry.
    let endpoint = s.id.to_string();
    let stream = web
        .api
        .with_db(move |db, _| {
            let Some(row) = db.cameras()?.into_iter().find(|c| c.endpoint == endpoint) else {
                return Ok(serde_json::Value::Null);
            };
            Ok(db
                .latest_aux(crate::db::AuxKind::Telemetry, row.id)?
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t.json).ok())
                .and_then(|mut v| v.get_mut("stream").map(serde_json::Value::take))
                .unwrap_or(serde_json::Value::Null))
        })
        .await?;
    Ok(Json(json!({
        "stream": stream,
        "id": s.id.to_string(),
        "name": s.info.name,
        "online": s.online,
        "last_seen": api::rfc3339(last_seen_us),
        "firmware": s.info.firmware,
        "width": s.info.width,
        "height": s.info.height,
        "fps": f64::from(s.info.fps_milli) / 1000.0,
        "bitrate_kbps": s.info.bitrate_kbps,
    })))
}

#[derive(Debug, Deserialize)]
struct TimeQuery {
    time: Option<String>,
}

async fn thumbnail(
    State(web): State<WebState>,
    UrlPath(camera): UrlPath<String>,
    Query(q): Query<TimeQuery>,
) -> Result<Response, ApiFailure> {
    let time = api::parse_time("time", q.time.as_deref())?;
    let resolved = web.api.resolve_camera(&camera);
    let (endpoint, located) = web
        .api
        .with_db(move |db, _| {
            let cam = api::find_camera(db, &camera, resolved.as_deref())?;
            let at = thumbs::locate(db, cam.id, time).map_err(thumb_failure)?;
            Ok((cam.endpoint, at))
        })
        .await?;
    let jpeg = web
        .thumbs
        .render(&endpoint, located)
        .await
        .map_err(thumb_failure)?;
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    Ok((h, jpeg).into_response())
}

fn thumb_failure(e: ThumbError) -> ApiFailure {
    match e {
        ThumbError::NotRecorded => ApiFailure::not_found("no_recordings", e.to_string()),
        other => ApiFailure::internal(other.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct Rename {
    name: String,
}

fn allowlist_failure(e: AllowlistError) -> ApiFailure {
    match e {
        AllowlistError::Unknown { .. } => ApiFailure::not_found("unknown_camera", e.to_string()),
        AllowlistError::NameTaken { .. } => {
            ApiFailure::new(StatusCode::CONFLICT, "name_taken", e.to_string())
        }
        AllowlistError::BadName { .. } | AllowlistError::BadId(_) => {
            ApiFailure::bad_request("bad_name", e.to_string())
        }
        other => ApiFailure::internal(other.to_string()),
    }
}

/// `POST /api/v1/cameras/{camera}/rename` (admin): the server's record of the
/// camera gets a new name (as `kodama-server camera rename`).
async fn rename_camera(
    State(web): State<WebState>,
    Extension(who): Extension<Principal>,
    UrlPath(camera): UrlPath<String>,
    Json(r): Json<Rename>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    who.require_admin()?;
    let renamed = web
        .allowlist
        .rename(PeerRole::Camera, &camera, r.name.trim())
        .map_err(allowlist_failure)?;
    tracing::info!(camera = %renamed.id, name = %renamed.name, "camera renamed from the web app");
    Ok(Json(
        json!({"id": renamed.id.to_string(), "name": renamed.name}),
    ))
}

/// `DELETE /api/v1/cameras/{camera}` (admin): off the allowlist and revoked
/// for good (as `kodama-server camera remove`); its recordings stay.
async fn remove_camera(
    State(web): State<WebState>,
    Extension(who): Extension<Principal>,
    UrlPath(camera): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    who.require_admin()?;
    let gone = web
        .allowlist
        .remove_named(PeerRole::Camera, &camera)
        .map_err(allowlist_failure)?;
    tracing::info!(camera = %gone.id, name = %gone.name, "camera removed and revoked from the web app");
    Ok(Json(json!({"id": gone.id.to_string(), "revoked": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_origin_is_extracted_or_refused() {
        assert_eq!(
            url_origin("https://tile.example.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.example.org")
        );
        assert_eq!(url_origin("https://{s}.tiles/{z}"), None);
        assert_eq!(url_origin("not a url"), None);
    }
}
