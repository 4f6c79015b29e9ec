//! The server's iroh node: one protocol handler per ALPN, and the allowlist
//! checked right after the TLS handshake, before any Kodama byte is read.

use std::sync::Arc;

use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::iroh::endpoint::{AfterHandshakeOutcome, EndpointHooks};
use kodama_net::iroh::protocol::{AcceptError, ProtocolHandler, Router};
use kodama_net::{codes, Connection, Endpoint, EndpointTicket, SecretKey};
use kodama_proto::{role_for_alpn, Role, ALPN_CAMERA, ALPN_VIEWER};
use tokio_util::sync::CancellationToken;

use crate::allowlist::Allowlist;
use crate::hub::Hub;
use crate::{camera_session, viewer_session};

/// Refuses peers that are not on the allowlist for the role their ALPN names.
#[derive(Debug)]
struct AllowlistHook(Arc<Allowlist>);

impl EndpointHooks for AllowlistHook {
    async fn after_handshake(&self, conn: &Connection) -> AfterHandshakeOutcome {
        let id = conn.remote_id();
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
        tracing::warn!(
            peer = %id,
            %role,
            "refused {role} {id}: not on the allowlist (allow it with: kodama-server allow add {id} --role {role})"
        );
        AfterHandshakeOutcome::Reject {
            error_code: codes::NOT_ALLOWED,
            reason: format!("{role} not on this server's allowlist").into_bytes(),
        }
    }
}

#[derive(Debug, Clone)]
struct Handler {
    role: Role,
    hub: Arc<Hub>,
    name: String,
    cancel: CancellationToken,
}

impl ProtocolHandler for Handler {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let (hub, name, cancel) = (self.hub.clone(), self.name.clone(), self.cancel.clone());
        match self.role {
            Role::Camera => camera_session::run(conn, hub, name, cancel).await,
            Role::Viewer => viewer_session::run(conn, hub, name, cancel).await,
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
    /// Who may connect.
    pub allowlist: Arc<Allowlist>,
}

/// A running server node.
#[derive(Debug)]
pub struct ServerNode {
    router: Router,
    cancel: CancellationToken,
}

impl ServerNode {
    /// Binds the endpoint and starts accepting cameras and viewers.
    pub async fn start(
        mut opts: NodeOptions,
        hub: Arc<Hub>,
        cancel: CancellationToken,
    ) -> Result<Self, kodama_net::error::EndpointError> {
        opts.endpoint.alpns = vec![ALPN_CAMERA.to_vec(), ALPN_VIEWER.to_vec()];
        let ep = endpoint::bind_with_hooks(
            opts.secret,
            &opts.endpoint,
            Some(AllowlistHook(opts.allowlist.clone())),
        )
        .await?;
        let handler = |role| Handler {
            role,
            hub: hub.clone(),
            name: opts.name.clone(),
            cancel: cancel.clone(),
        };
        let router = Router::builder(ep)
            .accept(ALPN_CAMERA, handler(Role::Camera))
            .accept(ALPN_VIEWER, handler(Role::Viewer))
            .spawn();
        Ok(Self { router, cancel })
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
        self.cancel.cancel();
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
    }
}
