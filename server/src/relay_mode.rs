//! Relay-only mode (`kodama-server relay`): a site node that accepts its
//! cameras (and viewers, and pairing) like a server but records nothing and
//! serves no HTTP API; it forwards every camera to its `[[upstream]]`
//! servers. The upstreams' acknowledgements travel on to the cameras, so a
//! camera's own store-and-forward keeps whatever no upstream has recorded.

use std::sync::Arc;

use anyhow::Context;
use kodama_net::endpoint;
use tokio_util::sync::CancellationToken;

use crate::allowlist::Allowlist;
use crate::config::Config;
use crate::hub::Hub;
use crate::pair_session::PairingService;
use crate::pairing::PairingStore;
use crate::ratelimit::Limits;
use crate::sessions::Sessions;
use crate::transport::{NodeOptions, ServerNode};

/// A running relay node.
#[derive(Debug)]
pub struct RelayNode {
    /// The iroh node (cameras, viewers and pairing are accepted as on a server).
    pub node: ServerNode,
    /// The live hub.
    pub hub: Arc<Hub>,
    /// The allowlist.
    pub allowlist: Arc<Allowlist>,
    forwarders: tokio::task::JoinSet<()>,
    cancel: CancellationToken,
}

impl RelayNode {
    /// Starts the node and its forwarders; `config` needs at least one `[[upstream]]`.
    pub async fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.upstreams.is_empty(),
            "relay mode forwards to [[upstream]] servers: add one to the config file"
        );
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
        let secret = endpoint::load_or_create_key(&config.key_path())?;
        let allowlist = Arc::new(Allowlist::new(config.allowlist_path()));
        allowlist.list().context("the allowlist is unreadable")?;
        let (feeds, upstreams) = crate::upstream::feeds(&config.upstreams);
        let hub = Hub::new(feeds);
        // A relay node has no API, so no update jobs: cameras behind it are
        // updated by the server that owns them directly.
        let sessions = Sessions::new(crate::updates::Updates::new(
            config.server.data_dir.join("updates"),
        ));
        let pairing = Arc::new(PairingService::new(
            PairingStore::new(config.pairing_path()),
            allowlist.clone(),
            Limits::default(),
        ));
        let own = cancel.child_token();
        let node = ServerNode::start(
            NodeOptions::for_config(config, secret, allowlist.clone(), sessions, pairing),
            hub.clone(),
            own.clone(),
        )
        .await?;
        let forwarders = upstreams.start(
            node.endpoint().clone(),
            hub.clone(),
            allowlist.clone(),
            crate::upstream::Origin::Relay,
            own.child_token(),
        )?;
        if let Err(e) = std::fs::write(config.ticket_path(), format!("{}\n", node.ticket())) {
            tracing::warn!("cannot write {}: {e}", config.ticket_path().display());
        }
        Ok(Self {
            node,
            hub,
            allowlist,
            forwarders,
            cancel: own,
        })
    }

    /// Closes sessions and stops forwarding.
    pub async fn shutdown(mut self) {
        self.node.shutdown().await;
        self.cancel.cancel();
        while self.forwarders.join_next().await.is_some() {}
    }
}

/// `kodama-server relay`: runs until cancelled.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let relay = RelayNode::start(&config, cancel.clone()).await?;
    println!(
        "kodama-server {} relay is running (no recording, no HTTP API)",
        env!("CARGO_PKG_VERSION")
    );
    println!("  node id: {}", relay.node.endpoint().id());
    println!("  ticket: {}", relay.node.ticket());
    for u in &config.upstreams {
        let to = u.dial_addr().map(|a| a.id.to_string()).unwrap_or_default();
        println!(
            "  forwarding {} to {to} (allow this relay there: kodama-server allow add {} --role relay --carry CAMERA_ID)",
            if u.cameras.is_empty() {
                "every camera".to_owned()
            } else {
                u.cameras.join(", ")
            },
            relay.node.endpoint().id()
        );
    }
    cancel.cancelled().await;
    relay.shutdown().await;
    Ok(())
}
