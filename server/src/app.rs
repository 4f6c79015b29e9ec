//! Wires the server together and runs it until cancelled; also the
//! subcommands that need the server's data directory (`allow`, `view`, `id`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_proto::{CameraSelector, Role};
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, PeerRole};
use crate::cli::{AllowAction, ViewArgs};
use crate::config::Config;
use crate::hub::Hub;
use crate::transport::{NodeOptions, ServerNode};
use crate::viewer::{self, ViewOptions, ViewerClient};

/// A running server (for tests and the demo).
#[derive(Debug)]
pub struct Server {
    /// The iroh node.
    pub node: ServerNode,
    /// The live hub.
    pub hub: Arc<Hub>,
    /// The allowlist.
    pub allowlist: Arc<Allowlist>,
}

impl Server {
    /// Starts everything in `config`.
    pub async fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
        let secret = endpoint::load_or_create_key(&config.key_path())?;
        let allowlist = Arc::new(Allowlist::new(config.allowlist_path()));
        allowlist.list().context("the allowlist is unreadable")?;
        let hub = Hub::new(Vec::new());
        let node = ServerNode::start(
            NodeOptions {
                secret,
                endpoint: EndpointOptions {
                    offline: config.server.offline,
                    bind: Some(config.server.listen),
                    alpns: Vec::new(),
                },
                name: config.server.name.clone(),
                allowlist: allowlist.clone(),
            },
            hub.clone(),
            cancel,
        )
        .await?;
        Ok(Self {
            node,
            hub,
            allowlist,
        })
    }
}

/// `kodama-server run`.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let server = Server::start(&config, cancel.clone()).await?;
    let id = server.node.endpoint().id();
    let addrs: Vec<String> = server
        .node
        .endpoint()
        .bound_sockets()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("kodama-server {} is running", env!("CARGO_PKG_VERSION"));
    println!("  node id: {id}");
    println!("  listening on: {}", addrs.join(", "));
    println!("  ticket: {}", server.node.ticket());
    println!("  data: {}", config.server.data_dir.display());
    println!(
        "  allowed peers: {} (add a camera with: kodama-server allow add <camera-node-id>)",
        server.allowlist.list().map(|l| l.len()).unwrap_or(0)
    );
    cancel.cancelled().await;
    tracing::info!("shutting down");
    server.node.shutdown().await;
    Ok(())
}

/// `kodama-server id`.
pub fn print_id(config: &Config) -> anyhow::Result<()> {
    let key = endpoint::load_or_create_key(&config.key_path())?;
    println!("{}", key.public());
    Ok(())
}

/// `kodama-server allow …`.
pub fn allow(config: &Config, action: AllowAction) -> anyhow::Result<()> {
    let list = Allowlist::new(config.allowlist_path());
    match action {
        AllowAction::Add {
            id,
            role,
            camera,
            label,
        } => {
            let role = if camera { PeerRole::Camera } else { role };
            let added = list.add(&id, role, &label)?;
            println!(
                "{} {id} as {}",
                if added { "allowed" } else { "updated" },
                if role == PeerRole::Camera { "camera" } else { "viewer" }
            );
        }
        AllowAction::List => {
            for p in list.list()? {
                let role = if p.role == PeerRole::Camera { "camera" } else { "viewer" };
                println!("{} {role:6} {}", p.id, p.label);
            }
        }
        AllowAction::Remove { id, role } => {
            let n = list.remove(&id, role)?;
            if n == 0 {
                anyhow::bail!("{id} is not on the allowlist");
            }
            println!("removed {n} entr{}", if n == 1 { "y" } else { "ies" });
        }
    }
    Ok(())
}

/// `kodama-server view …`.
pub async fn view(config: &Config, args: ViewArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let key_path = args
        .key_path
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("viewer.key"));
    let secret = endpoint::load_or_create_key(&key_path)?;
    let server = if args.ticket.is_some() || args.server_id.is_some() {
        endpoint::dial_addr(args.ticket.as_deref(), args.server_id.as_deref(), &args.server_addr)?
    } else {
        // The local server: whoever can read its data directory owns it, so
        // the viewer may put itself on the allowlist.
        let server_key = endpoint::load_or_create_key(&config.key_path())
            .context("no --ticket or --server-id given and no local server in --data-dir")?;
        let list = Allowlist::new(config.allowlist_path());
        if !list.allows(&secret.public(), Role::Viewer) {
            list.add(&secret.public().to_string(), PeerRole::Viewer, "local viewer")?;
        }
        let port = config.server.listen.port();
        let addrs = if args.server_addr.is_empty() {
            vec![SocketAddr::from(([127, 0, 0, 1], port))]
        } else {
            args.server_addr.clone()
        };
        endpoint::dial_addr(None, Some(&server_key.public().to_string()), &addrs)?
    };
    let ep = endpoint::bind(
        secret,
        &EndpointOptions {
            offline: config.server.offline,
            bind: None,
            alpns: Vec::new(),
        },
    )
    .await?;
    let selector = match &args.camera {
        None => CameraSelector::FirstOnline,
        Some(c) => match endpoint::parse_endpoint_id(c) {
            Ok(id) => CameraSelector::Id(*id.as_bytes()),
            Err(_) => CameraSelector::Name(c.clone()),
        },
    };
    let client = ViewerClient::connect(&ep, server, selector).await?;
    viewer::watch(
        client,
        ViewOptions {
            output: args.output.clone(),
            duration: args.duration.map(Duration::from_secs_f64),
            frames: args.frames,
            stats_every: Duration::from_secs_f64(args.stats_every.max(0.1)),
        },
        cancel,
    )
    .await?;
    ep.close().await;
    Ok(())
}
