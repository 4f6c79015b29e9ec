//! The playback client behind `kodama-server view --from … --to …`: fetches
//! an export from the local API with the token from the data directory and
//! writes the MP4 to a file or to stdout (to pipe into a player:
//! `kodama-server view … | ffplay -`), and `kodama-server token rotate`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use futures::StreamExt;
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
    /// The server could not be reached.
    #[error("cannot reach the API at {addr}: {source} (is kodama-server running?)")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// The error.
        source: reqwest::Error,
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

/// Where to reach the API from this machine: a wildcard listen address is
/// reached over loopback.
fn connect_addr(listen: SocketAddr) -> SocketAddr {
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

async fn get(
    client: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    path: &str,
) -> Result<reqwest::Response, ClientError> {
    let resp = client
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|source| ClientError::Http { addr, source })?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        return Err(ClientError::Status { status, body });
    }
    Ok(resp)
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
    let client = reqwest::Client::new();
    let camera = match camera {
        Some(c) => c.to_owned(),
        None => {
            let body = get(&client, addr, &token, "/api/v1/cameras")
                .await?
                .bytes()
                .await
                .map_err(|source| ClientError::Http { addr, source })?;
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
    let resp = get(&client, addr, &token, &path).await?;
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
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| ClientError::Http { addr, source })?;
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
