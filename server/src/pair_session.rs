//! One connection on the pairing ALPN (`kodama/pair/1`): any key may dial
//! it, but all it can do is redeem a one-time code.
//!
//! The peer sends [`Message::PairRequest`]; the server rate-limits (per key
//! and overall), checks the code ([`crate::pairing`]), puts the key on the
//! allowlist under the name recorded with the code, and answers
//! [`Message::Paired`] — or a [`Message::Reject`] whose code says why
//! (wrong, expired, used, rate limited, revoked, name taken). Every attempt
//! is logged with the peer's key and the outcome.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodama_net::control::ControlStream;
use kodama_net::{codes, Connection};
use kodama_proto::{Message, RejectCode, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, AllowlistError, PeerRole};
use crate::hello::{self, HELLO_TIMEOUT};
use crate::pairing::{PairingStore, RedeemError};
use crate::ratelimit::{Limits, RateLimiter, RetryAfter};

/// What the pairing handler needs.
#[derive(Debug)]
pub struct PairingService {
    /// Pending codes.
    pub store: PairingStore,
    /// Where paired keys go.
    pub allowlist: Arc<Allowlist>,
    limiter: Mutex<RateLimiter<kodama_net::EndpointId>>,
}

impl PairingService {
    /// A service with the given limits.
    pub fn new(store: PairingStore, allowlist: Arc<Allowlist>, limits: Limits) -> Self {
        Self {
            store,
            allowlist,
            limiter: Mutex::new(RateLimiter::new(limits, Instant::now())),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs one pairing connection to its end.
pub async fn run(
    conn: Connection,
    service: Arc<PairingService>,
    server_name: String,
    cancel: CancellationToken,
) {
    let peer = conn.remote_id();
    let mut control = match tokio::time::timeout(HELLO_TIMEOUT, ControlStream::accept(&conn)).await
    {
        Ok(Ok(c)) => c,
        _ => {
            tracing::warn!(%peer, "pairing attempt: no request within {HELLO_TIMEOUT:?}");
            conn.close(codes::HANDSHAKE, b"no pairing request");
            return;
        }
    };
    let request = tokio::select! {
        _ = cancel.cancelled() => {
            conn.close(codes::SHUTDOWN, b"server shutting down");
            return;
        }
        m = control.recv_timeout(HELLO_TIMEOUT) => m,
    };
    let (role, code, suggested) = match request {
        Ok(Message::PairRequest {
            version,
            role,
            code,
            name,
        }) if version == PROTOCOL_VERSION => (role, code, name),
        Ok(Message::PairRequest { version, .. }) => {
            let reason =
                format!("protocol version {version}; this server speaks {PROTOCOL_VERSION}");
            refuse(&conn, &mut control, RejectCode::VersionMismatch, &reason).await;
            return;
        }
        Ok(other) => {
            let reason = format!("expected a pairing request, got {other:?}");
            refuse(&conn, &mut control, RejectCode::BadHello, &reason).await;
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, "pairing attempt: bad request: {e}");
            conn.close(codes::HANDSHAKE, e.to_string().as_bytes());
            return;
        }
    };
    let role = PeerRole::from_role(role);
    let outcome = attempt(&service, &conn, role, &code);
    match outcome {
        Ok(name) => {
            tracing::info!(%peer, %role, %name, suggested = %suggested, "pairing attempt: paired");
            let _ = control
                .send(&Message::Paired {
                    name,
                    server: server_name,
                })
                .await;
            // Let the answer arrive before the peer's close.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(codes::NORMAL, b"paired");
        }
        Err((code, reason)) => {
            tracing::warn!(%peer, %role, ?code, "pairing attempt refused: {reason}");
            refuse(&conn, &mut control, code, &reason).await;
        }
    }
}

fn attempt(
    service: &PairingService,
    conn: &Connection,
    role: PeerRole,
    code: &str,
) -> Result<String, (RejectCode, String)> {
    let peer = conn.remote_id();
    if service.allowlist.is_revoked(&peer) {
        return Err((
            RejectCode::Revoked,
            "this key was removed from the server and can never pair again".into(),
        ));
    }
    let limited = service
        .limiter
        .lock()
        .map_err(|_| (RejectCode::RateLimited, "internal lock poisoned".to_owned()))?
        .check(&peer, Instant::now());
    if let Err(RetryAfter(wait)) = limited {
        return Err((
            RejectCode::RateLimited,
            format!(
                "too many pairing attempts; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let redeemed = service
        .store
        .redeem(code, role, &peer, unix_now())
        .map_err(|e| {
            let code = match &e {
                RedeemError::Wrong | RedeemError::WrongRole { .. } => RejectCode::WrongCode,
                RedeemError::Expired { .. } => RejectCode::CodeExpired,
                RedeemError::Used { .. } => RejectCode::CodeUsed,
                _ => RejectCode::BadHello,
            };
            (code, e.to_string())
        })?;
    match service
        .allowlist
        .add(&peer.to_string(), role, &redeemed.name)
    {
        Ok(_) => Ok(redeemed.name),
        Err(e @ AllowlistError::NameTaken { .. }) => Err((RejectCode::NameTaken, e.to_string())),
        Err(e @ AllowlistError::Revoked { .. }) => Err((RejectCode::Revoked, e.to_string())),
        Err(e) => Err((RejectCode::BadHello, format!("server error: {e}"))),
    }
}

async fn refuse(conn: &Connection, control: &mut ControlStream, code: RejectCode, reason: &str) {
    let reject = Message::Reject {
        code,
        reason: reason.to_owned(),
    };
    hello::refuse(conn, control, &reject, reason).await;
}
