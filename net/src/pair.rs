//! The dialling side of pairing: connect on the pairing ALPN, send the
//! one-time code, and learn the name the server recorded — or why not.
//! Cameras (`server.pair` in `kodama.toml`, or a QR code) and viewers
//! (`kodama-server view --pair`) share it.

use std::time::Duration;

use iroh::{Endpoint, EndpointAddr};
use kodama_proto::{Message, RejectCode, Role, ALPN_PAIR, PROTOCOL_VERSION};

use crate::codes;
use crate::control::ControlStream;

/// How long to wait for the server to answer, all told.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(15);

/// A successful pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// The name the server knows us by.
    pub name: String,
    /// The server's name.
    pub server: String,
}

/// Why pairing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// The server could not be reached (worth retrying).
    #[error("cannot reach the server to pair: {0}")]
    Unreachable(String),
    /// The server refused the code (retrying the same code will not help,
    /// except after [`RejectCode::RateLimited`]).
    #[error("the server refused pairing ({code:?}): {reason}")]
    Refused {
        /// Why, as a code.
        code: RejectCode,
        /// Why, in words.
        reason: String,
    },
    /// The server answered something that is not pairing.
    #[error("pairing: unexpected answer: {0}")]
    Protocol(String),
}

impl PairError {
    /// Whether trying again later with the same code can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PairError::Unreachable(_)
                | PairError::Refused {
                    code: RejectCode::RateLimited | RejectCode::ShuttingDown,
                    ..
                }
        )
    }
}

/// Redeems `code` at `server` as a `role` called (we suggest) `name`.
pub async fn pair(
    endpoint: &Endpoint,
    server: EndpointAddr,
    role: Role,
    code: &str,
    name: &str,
) -> Result<Paired, PairError> {
    tokio::time::timeout(PAIR_TIMEOUT, exchange(endpoint, server, role, code, name))
        .await
        .map_err(|_| PairError::Unreachable(format!("no answer within {PAIR_TIMEOUT:?}")))?
}

async fn exchange(
    endpoint: &Endpoint,
    server: EndpointAddr,
    role: Role,
    code: &str,
    name: &str,
) -> Result<Paired, PairError> {
    let conn = endpoint
        .connect(server, ALPN_PAIR)
        .await
        .map_err(|e| PairError::Unreachable(e.to_string()))?;
    let mut control = ControlStream::open(&conn)
        .await
        .map_err(|e| PairError::Unreachable(e.to_string()))?;
    control
        .send(&Message::PairRequest {
            version: PROTOCOL_VERSION,
            role,
            code: code.to_owned(),
            name: name.to_owned(),
        })
        .await
        .map_err(|e| PairError::Unreachable(e.to_string()))?;
    let reply = control.recv().await;
    let out = match reply {
        Ok(Message::Paired { name, server }) => Ok(Paired { name, server }),
        Ok(Message::Reject { code, reason }) => Err(PairError::Refused { code, reason }),
        Ok(other) => Err(PairError::Protocol(format!("{other:?}"))),
        Err(e) => Err(match conn.close_reason() {
            Some(r) => PairError::Refused {
                code: RejectCode::NotAllowed,
                reason: r.to_string(),
            },
            None => PairError::Unreachable(e.to_string()),
        }),
    };
    conn.close(codes::NORMAL, b"pairing done");
    out
}
