//! Who is asking: the bearer token (the owner's scripts) or a browser session
//! cookie, checked by one middleware in front of every API route; plus the
//! account routes (first-run setup, login, logout, logout everywhere,
//! accounts).
//!
//! Cookies are `HttpOnly; SameSite=Lax; Path=/` (`Secure` when the server
//! itself speaks TLS). Lax, not Strict: Safari drops Strict cookies on
//! WebSocket upgrades. Lax still keeps them off cross-site subrequests and
//! POSTs; every mutation additionally needs the session's CSRF token in
//! `X-CSRF-Token`, and login/setup need a JSON body (which a cross-site
//! form cannot send without a CORS preflight this server never grants).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::accounts::{Account, AccountError, Accounts, Role, Session};
use super::WebState;
use crate::api::{ApiFailure, ApiState};

/// The session cookie's name.
pub const COOKIE: &str = "kodama_session";
/// The header mutations carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The bearer token: whoever can read the data directory (the owner).
    Token,
    /// A browser session.
    Session(Session),
}

impl Principal {
    /// Whether it may change things.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Token => true,
            Principal::Session(s) => s.account.role == Role::Admin,
        }
    }

    /// Refuses non-admins with 403.
    pub fn require_admin(&self) -> Result<(), ApiFailure> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                "admin_only",
                "only an admin account can change this",
            ))
        }
    }
}

/// The session cookie's value in `headers`, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn unauthorized(code: &'static str, message: &str) -> Response {
    let mut r = ApiFailure::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The middleware in front of every route but health, the app's files and
/// the account routes: a valid bearer token, or a session cookie (plus the
/// CSRF token on anything but GET/HEAD). Puts the [`Principal`] in the
/// request's extensions.
pub async fn require_auth(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    if let Some(t) = bearer {
        if !state.check_token(&t) {
            return unauthorized("bad_token", "the bearer token is not valid");
        }
        req.extensions_mut().insert(Principal::Token);
        return next.run(req).await;
    }
    let Some(cookie) = session_cookie(req.headers()).map(str::to_owned) else {
        return unauthorized(
            "missing_token",
            "log in, or send Authorization: Bearer <token> (the token is in <data>/api-token)",
        );
    };
    let accounts = state.accounts().clone();
    let session = match tokio::task::spawn_blocking(move || accounts.session(&cookie)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => {
            return unauthorized("session_expired", "the session has ended; log in again")
        }
        Ok(Err(e)) => return ApiFailure::internal(e.to_string()).into_response(),
        Err(e) => return ApiFailure::internal(format!("task: {e}")).into_response(),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !super::accounts::constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
            return ApiFailure::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a change needs the session's X-CSRF-Token header",
            )
            .into_response();
        }
    }
    req.extensions_mut().insert(Principal::Session(session));
    next.run(req).await
}

fn account_failure(e: AccountError) -> ApiFailure {
    match e {
        AccountError::BadSetupToken => {
            ApiFailure::new(StatusCode::FORBIDDEN, "bad_setup_token", e.to_string())
        }
        AccountError::NameTaken(_) => {
            ApiFailure::new(StatusCode::CONFLICT, "name_taken", e.to_string())
        }
        AccountError::Invalid(m) => ApiFailure::bad_request("invalid", m),
        other => ApiFailure::internal(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
) -> Result<T, ApiFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiFailure::internal(format!("task: {e}")))?
        .map_err(account_failure)
}

fn session_json(s: &Session, setup_pending: bool, web: &WebState) -> serde_json::Value {
    json!({
        "account": {"id": s.account.id, "name": s.account.name, "role": s.account.role},
        "csrf": s.csrf,
        "setup_pending": setup_pending,
        "map_tile_url": web.map_tile_url,
    })
}

fn cookie_header(token: &str, secure: bool, max_age_s: i64) -> HeaderValue {
    let v = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn with_session(token: &str, s: &Session, web: &WebState) -> Response {
    let mut r = Json(session_json(s, false, web)).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie_header(
            token,
            web.secure_cookies,
            super::accounts::SESSION_IDLE_US / 1_000_000,
        ),
    );
    r
}

/// Same-origin check for requests that may carry no CSRF token (login,
/// setup, WebSocket upgrades): an `Origin` header, when present, must name
/// this server as the `Host` header does. Browsers always send `Origin` on
/// these; non-browser clients need not.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn require_json_same_origin(headers: &HeaderMap) -> Result<(), ApiFailure> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiFailure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_only",
            "send Content-Type: application/json",
        ));
    }
    if !same_origin(headers) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "requests from other sites are refused",
        ));
    }
    Ok(())
}

/// `GET /api/v1/session`: the current session (and its CSRF token), or 401
/// with whether first-run setup is pending.
pub async fn get_session(State(web): State<WebState>, headers: HeaderMap) -> Response {
    let pending = web.api.accounts().setup_pending();
    let Some(cookie) = session_cookie(&headers).map(str::to_owned) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "no_session", "message": "not logged in", "setup_pending": pending})),
        )
            .into_response();
    };
    let accounts = web.api.accounts().clone();
    match blocking(move || accounts.session(&cookie)).await {
        Ok(Some(s)) => Json(session_json(&s, pending, &web)).into_response(),
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "session_expired", "message": "log in again", "setup_pending": pending})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Body of setup and login.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    name: String,
    password: String,
    #[serde(default)]
    token: Option<String>,
}

/// `POST /api/v1/setup`: the first admin, with the one-time setup token.
pub async fn setup(
    State(web): State<WebState>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> Result<Response, ApiFailure> {
    require_json_same_origin(&headers)?;
    let accounts = web.api.accounts().clone();
    let token = c.token.unwrap_or_default();
    let (cookie, session) = blocking(move || {
        let account = accounts.complete_setup(&token, &c.name, &c.password)?;
        accounts.start_session(&account)
    })
    .await?;
    tracing::info!(account = %session.account.name, "first-run setup: admin created");
    Ok(with_session(&cookie, &session, &web))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /api/v1/login`: name and password → session cookie. Throttled per
/// client address and per name (see [`super::limiter`]).
pub async fn login(
    State(web): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> Result<Response, ApiFailure> {
    require_json_same_origin(&headers)?;
    let keys = [format!("ip:{}", peer.ip()), format!("name:{}", c.name)];
    let key_refs = [keys[0].as_str(), keys[1].as_str()];
    if let Err(wait_ms) = web.limiter().check(&key_refs, now_ms()) {
        let mut r = ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            format!(
                "too many failed logins; try again in {} s",
                wait_ms.div_ceil(1000)
            ),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait_ms.div_ceil(1000).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let accounts = web.api.accounts().clone();
    let (name, password) = (c.name.clone(), c.password);
    let found: Option<Account> = blocking(move || accounts.verify(&name, &password)).await?;
    let Some(account) = found else {
        web.limiter().failure(&key_refs, now_ms());
        tracing::warn!(%peer, name = %c.name, "failed login");
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "bad_login",
            "wrong name or password",
        ));
    };
    web.limiter().success(&key_refs);
    let accounts = web.api.accounts().clone();
    let (cookie, session) = blocking(move || accounts.start_session(&account)).await?;
    tracing::info!(%peer, account = %session.account.name, "logged in");
    Ok(with_session(&cookie, &session, &web))
}

/// `POST /api/v1/logout`: ends this session.
pub async fn logout(
    State(web): State<WebState>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    if let Some(cookie) = session_cookie(&headers).map(str::to_owned) {
        let accounts = web.api.accounts().clone();
        blocking(move || accounts.end_session(&cookie)).await?;
    }
    let mut r = Json(json!({"ended": 1})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie_header("", web.secure_cookies, 0));
    Ok(r)
}

/// `POST /api/v1/logout-all`: ends every session of the caller's account.
pub async fn logout_all(
    State(web): State<WebState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, ApiFailure> {
    let Principal::Session(s) = who else {
        return Err(ApiFailure::bad_request(
            "no_session",
            "the bearer token has no sessions; rotate it with `kodama-server token rotate`",
        ));
    };
    let accounts = web.api.accounts().clone();
    let n = blocking(move || accounts.end_all_sessions(s.account.id)).await?;
    let mut r = Json(json!({"ended": n})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie_header("", web.secure_cookies, 0));
    Ok(r)
}

/// `GET /api/v1/accounts` (admin).
pub async fn list_accounts(
    State(web): State<WebState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    who.require_admin()?;
    let accounts = web.api.accounts().clone();
    let list = blocking(move || accounts.list()).await?;
    Ok(Json(json!({ "accounts": list })))
}

/// Body of account creation.
#[derive(Debug, Deserialize)]
pub struct NewAccount {
    name: String,
    role: Role,
    password: String,
}

/// `POST /api/v1/accounts` (admin): a new account.
pub async fn create_account(
    State(web): State<WebState>,
    Extension(who): Extension<Principal>,
    Json(a): Json<NewAccount>,
) -> Result<Json<Account>, ApiFailure> {
    who.require_admin()?;
    let accounts: Arc<Accounts> = web.api.accounts().clone();
    let account = blocking(move || accounts.create(&a.name, a.role, &a.password)).await?;
    tracing::info!(account = %account.name, role = ?account.role, "account created");
    Ok(Json(account))
}

/// `DELETE /api/v1/accounts/{id}` (admin).
pub async fn delete_account(
    State(web): State<WebState>,
    Extension(who): Extension<Principal>,
    UrlPath(id): UrlPath<i64>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    who.require_admin()?;
    let accounts = web.api.accounts().clone();
    let deleted = blocking(move || accounts.delete(id)).await?;
    if !deleted {
        return Err(ApiFailure::not_found(
            "unknown_account",
            format!("no account {id}"),
        ));
    }
    Ok(Json(json!({"deleted": id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; kodama_session=abc ; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "kodama_session=")])),
            None
        );
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn origin_must_match_host() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "cams.example.org"),
            ("origin", "https://cams.example.org")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:8080"
        )])));
    }
}
