//! The server side of the hello exchange, shared by camera and viewer
//! sessions: accept the control stream, read the hello within
//! [`HELLO_TIMEOUT`], check it against the connection's role, and refuse
//! politely (a Reject message, a moment for it to arrive, then a close).

use std::time::Duration;

use kodama_net::control::ControlStream;
use kodama_net::{codes, Connection};
use kodama_proto::handshake::Hello;
use kodama_proto::{Message, Role, ServerHandshake};

/// How long a peer has to open its control stream and send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a camera's connection may stay a silent standby (no control
/// stream yet) before the server closes it; the camera then dials a new one.
pub const STANDBY_MAX: Duration = Duration::from_secs(24 * 3600);

/// How long a refused peer gets to read the Reject before the close.
const REJECT_GRACE: Duration = Duration::from_millis(500);

/// An accepted hello: the control stream, what the peer said, and the
/// Welcome to send once the session is ready.
pub(crate) struct Accepted {
    pub control: ControlStream,
    pub hello: Hello,
    pub welcome: Message,
}

/// Runs the handshake for a connection whose ALPN means `role`; on failure
/// the peer has been refused (logged, told, closed) and `None` returned.
pub(crate) async fn accept(conn: &Connection, role: Role, server_name: String) -> Option<Accepted> {
    let peer = conn.remote_id();
    // A camera may hold a connection open without a session: the warm
    // standby over its second uplink, which says hello only when the camera
    // fails over to it. It is already authenticated (allowlist hook) and the
    // transport's keep-alives and idle timeout bound how long a dead one
    // lingers. Viewers must speak at once.
    let wait = match role {
        Role::Camera => STANDBY_MAX,
        Role::Viewer | Role::Relay => HELLO_TIMEOUT,
    };
    let mut control = match tokio::time::timeout(wait, ControlStream::accept(conn)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(%peer, "{role} opened no control stream: {e}");
            conn.close(codes::HANDSHAKE, b"no control stream");
            return None;
        }
        Err(_) => {
            tracing::warn!(%peer, "{role} sent no hello within {wait:?}");
            conn.close(codes::HANDSHAKE, b"hello timeout");
            return None;
        }
    };
    let message = match control.recv_timeout(HELLO_TIMEOUT).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(%peer, "bad hello from {role}: {e}");
            conn.close(codes::HANDSHAKE, e.to_string().as_bytes());
            return None;
        }
    };
    match ServerHandshake::new(role, server_name).handle(message) {
        Ok((hello, welcome)) => Some(Accepted {
            control,
            hello,
            welcome,
        }),
        Err(e) => {
            let reason = e.to_string();
            refuse(conn, &mut control, &ServerHandshake::reject(&e), &reason).await;
            None
        }
    }
}

/// Tells the peer why with `reject`, gives it a moment to read it, closes.
pub(crate) async fn refuse(
    conn: &Connection,
    control: &mut ControlStream,
    reject: &Message,
    reason: &str,
) {
    tracing::warn!(peer = %conn.remote_id(), "refusing: {reason}");
    let _ = control.send(reject).await;
    let _ = tokio::time::timeout(REJECT_GRACE, conn.closed()).await;
    conn.close(codes::HANDSHAKE, reason.as_bytes());
}
