//! The playback client behind `kodama-server view --from … --to …`: fetches
//! an export from the local API with the token from the data directory and
//! writes the MP4 to a file or to stdout (to pipe into a player:
//! `kodama-server view … | ffplay -`), and `kodama-server token rotate`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use super::{token, ApiConfig};

/// Why playback failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `--from`/`--to` is not an RFC 3339 time, or the range is reversed.
    #[error("{0}")]
    BadRange(String),
    /// The token file could not be read.
    #[error("reading the API token {path}: {source} (is the server's data directory right?)")]
    Token {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The server could not be reached or the connection failed.
    #[error("cannot talk to the API at {addr}: {message} (is kodama-server running?)")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The server answered with an error.
    #[error("the API answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The JSON error body.
        body: String,
    },
    /// No camera is known to the server.
    #[error("the server has no cameras")]
    NoCamera,
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The output.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Rotates the API token; returns the token file. A running server picks up
/// the new token at its next request.
pub fn rotate_token(data_dir: &Path, cfg: &ApiConfig) -> std::io::Result<PathBuf> {
    let path = cfg.token_path(data_dir);
    token::rotate(&path)?;
    Ok(path)
}

/// Where to reach a server (the API, or the QUIC node for `view`) from this
/// machine: its listen address, or loopback when it listens on every address.
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

fn check_time(name: &str, v: &str) -> Result<i64, ClientError> {
    OffsetDateTime::parse(v, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
        .map_err(|e| {
            ClientError::BadRange(format!(
                "--{name} {v:?} is not an RFC 3339 time (e.g. 2025-01-31T18:00:00Z): {e}"
            ))
        })
}

/// One `GET` over a fresh HTTP/1.1 connection to the local API (plain
/// HTTP: the API listens on loopback). Non-2xx answers become
/// [`ClientError::Status`].
pub async fn get(
    addr: SocketAddr,
    token: &str,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let http = |e: &dyn std::fmt::Display| ClientError::Http {
        addr,
        message: e.to_string(),
    };
    let mut sender = connect(addr).await?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ClientError::Status { status, body });
    }
    Ok(resp)
}

/// An HTTP/1 connection to the local API. Its task ends when the last
/// response body is done or dropped.
async fn connect<B>(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http = |e: &dyn std::fmt::Display| ClientError::Http {
        addr,
        message: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| http(&e))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("API connection: {e}");
        }
    });
    Ok(sender)
}

/// One `POST` of a JSON body to the local API; returns the JSON answer.
/// Non-2xx answers become [`ClientError::Status`].
pub async fn post_json(
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ClientError> {
    post(
        addr,
        token,
        path,
        "application/json",
        bytes::Bytes::from(body.to_string()),
    )
    .await
}

/// One `POST` of `body` (of `content_type`) to the local API; returns the
/// JSON answer. Non-2xx answers become [`ClientError::Status`].
async fn post(
    addr: SocketAddr,
    token: &str,
    path: &str,
    content_type: &'static str,
    body: bytes::Bytes,
) -> Result<serde_json::Value, ClientError> {
    let http = |e: &dyn std::fmt::Display| ClientError::Http {
        addr,
        message: e.to_string(),
    };
    let mut sender = connect(addr).await?;
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(http_body_util::Full::new(body))
        .map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status();
    let bytes = body_bytes(addr, resp).await?;
    if !status.is_success() {
        return Err(ClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| http(&e))
}

/// Sends an admin's command (`keyframe`, `reboot`, `snapshot`) to `camera`
/// through the running server's API, authenticated with the token in the
/// data directory; returns the camera's answer.
pub async fn command(
    data_dir: &Path,
    cfg: &ApiConfig,
    camera: &str,
    command: &str,
) -> Result<serde_json::Value, ClientError> {
    command_with(
        data_dir,
        cfg,
        camera,
        serde_json::json!({ "command": command }),
    )
    .await
}

/// [`command`] with a full body (`{"command": "tier", "mode": "cap", "rung": 1}`).
pub async fn command_with(
    data_dir: &Path,
    cfg: &ApiConfig,
    camera: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, ClientError> {
    let token_path = cfg.token_path(data_dir);
    let token = std::fs::read_to_string(&token_path).map_err(|source| ClientError::Token {
        path: token_path.clone(),
        source,
    })?;
    let addr = connect_addr(cfg.listen);
    let path = format!(
        "/api/v1/cameras/{}/commands",
        percent_encode_segment(camera)
    );
    post_json(addr, token.trim(), &path, &body).await
}

fn read_token(data_dir: &Path, cfg: &ApiConfig) -> Result<String, ClientError> {
    let token_path = cfg.token_path(data_dir);
    std::fs::read_to_string(&token_path)
        .map(|t| t.trim().to_owned())
        .map_err(|source| ClientError::Token {
            path: token_path.clone(),
            source,
        })
}

/// Uploads the bundle at `bundle` for `camera` (an admin's `camera
/// update`); the running server stores it and starts delivering it.
pub async fn start_update(
    data_dir: &Path,
    cfg: &ApiConfig,
    camera: &str,
    bundle: &Path,
) -> Result<serde_json::Value, ClientError> {
    let token = read_token(data_dir, cfg)?;
    let addr = connect_addr(cfg.listen);
    let body = tokio::fs::read(bundle)
        .await
        .map_err(|source| ClientError::Write {
            path: bundle.display().to_string(),
            source,
        })?;
    let path = format!("/api/v1/cameras/{}/update", percent_encode_segment(camera));
    post(
        addr,
        &token,
        &path,
        "application/octet-stream",
        bytes::Bytes::from(body),
    )
    .await
}

/// `GET` of a JSON document from the local API.
pub async fn get_json(
    data_dir: &Path,
    cfg: &ApiConfig,
    path: &str,
) -> Result<serde_json::Value, ClientError> {
    let token = read_token(data_dir, cfg)?;
    let addr = connect_addr(cfg.listen);
    let resp = get(addr, &token, path).await?;
    let bytes = body_bytes(addr, resp).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Http {
        addr,
        message: e.to_string(),
    })
}

/// Where `camera`'s update stands.
pub async fn update_status(
    data_dir: &Path,
    cfg: &ApiConfig,
    camera: &str,
) -> Result<serde_json::Value, ClientError> {
    let path = format!("/api/v1/cameras/{}/update", percent_encode_segment(camera));
    get_json(data_dir, cfg, &path).await
}

fn percent_encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a whole response body.
pub async fn body_bytes(
    addr: SocketAddr,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<bytes::Bytes, ClientError> {
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ClientError::Http {
            addr,
            message: e.to_string(),
        })
}

/// Fetches the export of `camera` (endpoint id or name; `None`: the first
/// camera) from `from` to `to` and writes it to `output`, or to stdout when
/// `output` is `None` and stdout is not a terminal, or else to
/// `kodama-<from>.mp4`. Returns where it went and the byte count.
pub async fn view(
    data_dir: &Path,
    cfg: &ApiConfig,
    camera: Option<&str>,
    from: &str,
    to: &str,
    output: Option<&Path>,
) -> Result<(String, u64), ClientError> {
    let (a, b) = (check_time("from", from)?, check_time("to", to)?);
    if b <= a {
        return Err(ClientError::BadRange("--to must be after --from".into()));
    }
    let token_path = cfg.token_path(data_dir);
    let token = std::fs::read_to_string(&token_path)
        .map_err(|source| ClientError::Token {
            path: token_path.clone(),
            source,
        })?
        .trim()
        .to_owned();
    let addr = connect_addr(cfg.listen);
    let camera = match camera {
        Some(c) => c.to_owned(),
        None => {
            let body = body_bytes(addr, get(addr, &token, "/api/v1/cameras").await?).await?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ClientError::Status {
                    status: 200,
                    body: format!("not JSON: {e}"),
                })?;
            v["cameras"][0]["id"]
                .as_str()
                .ok_or(ClientError::NoCamera)?
                .to_owned()
        }
    };
    let enc = |s: &str| s.replace('+', "%2B").replace(':', "%3A");
    let path = format!(
        "/api/v1/cameras/{}/export?start={}&end={}",
        camera.replace('/', "%2F").replace(' ', "%20"),
        enc(from),
        enc(to)
    );
    let resp = get(addr, &token, &path).await?;
    let (name, mut out): (String, Box<dyn tokio::io::AsyncWrite + Unpin + Send>) = match output {
        Some(p) => (p.display().to_string(), Box::new(open(p).await?)),
        None if !std::io::stdout().is_terminal() => {
            ("stdout".into(), Box::new(tokio::io::stdout()))
        }
        None => {
            let p = PathBuf::from(format!("kodama-{}.mp4", from.replace(':', "-")));
            (p.display().to_string(), Box::new(open(&p).await?))
        }
    };
    let mut total = 0u64;
    let mut body = resp.into_body();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.map_err(|e| ClientError::Http {
            addr,
            message: e.to_string(),
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        total += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(|source| ClientError::Write {
                path: name.clone(),
                source,
            })?;
    }
    out.flush().await.map_err(|source| ClientError::Write {
        path: name.clone(),
        source,
    })?;
    Ok((name, total))
}

async fn open(p: &Path) -> Result<tokio::fs::File, ClientError> {
    tokio::fs::File::create(p)
        .await
        .map_err(|source| ClientError::Write {
            path: p.display().to_string(),
            source,
        })
}
