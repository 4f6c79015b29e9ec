//! The server's iroh node: one protocol handler per ALPN, and the allowlist
//! checked right after the TLS handshake, before any Kodama byte is read.
//!
//! The pairing ALPN (`kodama/pair/1`) is the one exception to the
//! allowlist: any key may dial it, and all it can do there is redeem a
//! one-time code ([`crate::pair_session`], which refuses revoked keys).
//!
//! A watcher re-reads the allowlist every [`REVOCATION_CHECK`] and closes the
//! live connections of any peer no longer on it, so removing a camera or
//! viewer cuts it off at once.

use std::sync::Arc;
use std::time::Duration;

use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::iroh::endpoint::{AfterHandshakeOutcome, EndpointHooks, Side};
use kodama_net::iroh::protocol::{AcceptError, ProtocolHandler, Router};
use kodama_net::{codes, Connection, Endpoint, EndpointTicket, SecretKey};
use kodama_proto::{role_for_alpn, Role, ALPN_CAMERA, ALPN_PAIR, ALPN_RELAY, ALPN_VIEWER};
use tokio_util::sync::CancellationToken;

use crate::allowlist::Allowlist;
use crate::hub::Hub;
use crate::pair_session::{self, PairingService};
use crate::sessions::Sessions;
use crate::{camera_session, relay_session, viewer_session};

/// How often the allowlist is checked for removals.
pub const REVOCATION_CHECK: Duration = Duration::from_millis(200);

/// Refuses peers that are not on the allowlist for the role their ALPN names.
#[derive(Debug)]
struct AllowlistHook(Arc<Allowlist>);

impl EndpointHooks for AllowlistHook {
    async fn after_handshake(&self, conn: &Connection) -> AfterHandshakeOutcome {
        let id = conn.remote_id();
        if conn.side() == Side::Client {
            // A connection this server dialled (forwarding to an upstream):
            // the upstream's own allowlist decides; ours is for who dials us.
            return AfterHandshakeOutcome::Accept;
        }
        if conn.alpn() == ALPN_PAIR {
            // Any key, even a revoked one: the pairing handler refuses it
            // with a reason the peer can show.
            return AfterHandshakeOutcome::Accept;
        }
        let Some(role) = role_for_alpn(conn.alpn()) else {
            tracing::warn!(peer = %id, "refused: unknown ALPN {:?}", String::from_utf8_lossy(conn.alpn()));
            return AfterHandshakeOutcome::Reject {
                error_code: codes::HANDSHAKE,
                reason: b"unknown ALPN".to_vec(),
            };
        };
        if self.0.allows(&id, role) {
            return AfterHandshakeOutcome::Accept;
        }
        let how = match role {
            Role::Relay => format!("kodama-server allow add {id} --role relay --carry CAMERA_ID"),
            _ => format!(
                "kodama-server {role} add NAME, or: kodama-server allow add {id} --role {role}"
            ),
        };
        tracing::warn!(
            peer = %id,
            %role,
            "refused {role} {id}: not on the allowlist (allow it with: {how})"
        );
        AfterHandshakeOutcome::Reject {
            error_code: codes::NOT_ALLOWED,
            reason: format!("{role} not on this server's allowlist").into_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Camera,
    Viewer,
    Relay,
    Pair,
}

#[derive(Debug, Clone)]
struct Handler {
    kind: Kind,
    hub: Arc<Hub>,
    allowlist: Arc<Allowlist>,
    sessions: Arc<Sessions>,
    pairing: Arc<PairingService>,
    name: String,
    cancel: CancellationToken,
}

impl ProtocolHandler for Handler {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let (hub, name, cancel) = (self.hub.clone(), self.name.clone(), self.cancel.clone());
        let ctx = camera_session::SessionContext {
            allowlist: self.allowlist.clone(),
            sessions: self.sessions.clone(),
        };
        match self.kind {
            Kind::Camera => camera_session::run(conn, hub, ctx, name, cancel).await,
            Kind::Viewer => viewer_session::run(conn, hub, ctx, name, cancel).await,
            Kind::Relay => relay_session::run(conn, hub, ctx, name, cancel).await,
            Kind::Pair => pair_session::run(conn, self.pairing.clone(), name, cancel).await,
        }
        Ok(())
    }
}

/// How to start the node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The server's identity.
    pub secret: SecretKey,
    /// Offline mode and bind address.
    pub endpoint: EndpointOptions,
    /// Name sent in welcomes.
    pub name: String,
    /// Who may connect, and their names.
    pub allowlist: Arc<Allowlist>,
    /// Live sessions (revocation, commands).
    pub sessions: Arc<Sessions>,
    /// One-time codes for the pairing ALPN.
    pub pairing: Arc<PairingService>,
}

impl NodeOptions {
    /// The node `config` describes: its offline mode, listen address and
    /// name (the full server and `kodama-server relay` start the same way).
    pub fn for_config(
        config: &crate::config::Config,
        secret: SecretKey,
        allowlist: Arc<Allowlist>,
        sessions: Arc<Sessions>,
        pairing: Arc<PairingService>,
    ) -> Self {
        Self {
            secret,
            endpoint: EndpointOptions {
                offline: config.server.offline,
                bind: Some(config.server.listen),
                alpns: Vec::new(),
            },
            name: config.server.name.clone(),
            allowlist,
            sessions,
            pairing,
        }
    }
}

/// A running server node.
#[derive(Debug)]
pub struct ServerNode {
    router: Router,
    sessions: Arc<Sessions>,
    cancel: CancellationToken,
}

impl ServerNode {
    /// Binds the endpoint and starts accepting cameras, viewers and pairings.
    pub async fn start(
        mut opts: NodeOptions,
        hub: Arc<Hub>,
        cancel: CancellationToken,
    ) -> Result<Self, kodama_net::error::EndpointError> {
        opts.endpoint.alpns = vec![
            ALPN_CAMERA.to_vec(),
            ALPN_VIEWER.to_vec(),
            ALPN_RELAY.to_vec(),
            ALPN_PAIR.to_vec(),
        ];
        let ep = endpoint::bind_with_hooks(
            opts.secret,
            &opts.endpoint,
            Some(AllowlistHook(opts.allowlist.clone())),
        )
        .await?;
        let handler = |kind| Handler {
            kind,
            hub: hub.clone(),
            allowlist: opts.allowlist.clone(),
            sessions: opts.sessions.clone(),
            pairing: opts.pairing.clone(),
            name: opts.name.clone(),
            cancel: cancel.clone(),
        };
        let router = Router::builder(ep)
            .accept(ALPN_CAMERA, handler(Kind::Camera))
            .accept(ALPN_VIEWER, handler(Kind::Viewer))
            .accept(ALPN_RELAY, handler(Kind::Relay))
            .accept(ALPN_PAIR, handler(Kind::Pair))
            .spawn();
        tokio::spawn(watch_revocations(
            opts.allowlist.clone(),
            opts.sessions.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            router,
            sessions: opts.sessions.clone(),
            cancel,
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.router.endpoint()
    }

    /// The ticket cameras and viewers use to reach this server.
    pub fn ticket(&self) -> EndpointTicket {
        endpoint::ticket(self.endpoint())
    }

    /// Stops sessions (they close their connections with a reason) and the endpoint.
    pub async fn shutdown(self) {
        // Every peer learns why at once: the endpoint's own close below
        // would otherwise reach a session the runtime has not yet run since
        // the cancellation with a bare code 0.
        self.sessions
            .close_all(codes::SHUTDOWN, b"server shutting down");
        self.cancel.cancel();
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
    }
}

/// Closes the connections of peers taken off the allowlist.
async fn watch_revocations(
    allowlist: Arc<Allowlist>,
    sessions: Arc<Sessions>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(REVOCATION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let list = allowlist.clone();
        let changed = tokio::task::spawn_blocking(move || list.refresh())
            .await
            .unwrap_or(true);
        if !changed {
            continue;
        }
        for (peer, role) in sessions.close_revoked(|id, role: Role| allowlist.allows(id, role)) {
            tracing::warn!(%peer, %role, "{role} {peer} was removed from the allowlist; connection closed");
        }
    }
}
