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
use crate::recorder::{Recorder, SystemClock};
use crate::transport::{NodeOptions, ServerNode};
use crate::viewer::{self, ViewOptions, ViewerClient};
use crate::{api, feed, web};

/// A running server (for tests and the demo).
#[derive(Debug)]
pub struct Server {
    /// The iroh node.
    pub node: ServerNode,
    /// The live hub.
    pub hub: Arc<Hub>,
    /// The allowlist.
    pub allowlist: Arc<Allowlist>,
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// The API token file.
    pub api_token: std::path::PathBuf,
    /// The web app's address (`http://…` or `https://…`).
    pub web_url: String,
    /// The one-time first-run setup link, while no web account exists.
    pub setup_link: Option<String>,
    recorder: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
}

impl Server {
    /// Starts everything in `config`.
    pub async fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
        let secret = endpoint::load_or_create_key(&config.key_path())?;
        let allowlist = Arc::new(Allowlist::new(config.allowlist_path()));
        allowlist.list().context("the allowlist is unreadable")?;

        // The recorder reconciles index and files before anything is accepted.
        let mut recording = config.recording.clone();
        recording.data_dir = config.server.data_dir.clone();
        let recorder = Recorder::open(recording, Arc::new(SystemClock::new()))
            .context("opening the recordings")?;
        let (feed, feed_rx) = feed::channel("recorder", RECORDER_QUEUE);
        let hub = Hub::new(vec![feed]);

        let live_hub = hub.clone();
        let live: Arc<dyn api::LiveStatus> = Arc::new(move || {
            live_hub
                .cameras()
                .into_iter()
                .map(|c| api::CameraStatus {
                    endpoint: c.id.to_string(),
                    name: c.info.name,
                    online: c.online,
                    last_seen_us: c
                        .last_seen
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_micros() as i64),
                })
                .collect()
        });
        let api_state = api::ApiState::open(
            &config.server.data_dir,
            &config.api,
            live,
            recorder.status(),
        )
        .context("opening the HTTP API")?;
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {}", config.api.listen))?;
        let api_addr = listener.local_addr()?;
        let api_token = api_state.token_path().to_owned();
        let tls = match (&config.api.tls_cert, &config.api.tls_key) {
            (Some(cert), Some(key)) => Some(web::tls::acceptor(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("api.tls_cert and api.tls_key go together: set both or neither"),
        };
        let web_url = format!(
            "{}://{}",
            if tls.is_some() { "https" } else { "http" },
            api_addr
        );
        let setup_link = api_state
            .accounts()
            .begin_setup(&web_url)
            .context("preparing the web app's first-run setup")?;
        let own = cancel.child_token();
        let recorder = tokio::spawn(recorder.run(feed_rx, own.child_token()));
        let api_cancel = own.child_token();
        let web_state = web::WebState::new(
            api_state,
            hub.clone(),
            allowlist.clone(),
            &config.server.data_dir,
            &config.api,
            api_cancel.clone(),
        );
        tracing::info!(addr = %api_addr, tls = tls.is_some(), "HTTP API and web app listening");
        let api = tokio::spawn(async move {
            if let Err(e) = web::tls::serve(listener, web::router(web_state), tls, api_cancel).await
            {
                tracing::error!("HTTP API stopped: {e}");
            }
        });
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
            own.clone(),
        )
        .await?;
        Ok(Self {
            node,
            hub,
            allowlist,
            api_addr,
            api_token,
            web_url,
            setup_link,
            recorder,
            api,
            cancel: own,
        })
    }

    /// Stops accepting, closes sessions, lets the recorder write what it has
    /// queued and close its segments, and stops the API.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
        // The hub (and so the recorder's feed) lives until the sessions end.
        self.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(10), self.recorder)
            .await
            .is_err()
        {
            tracing::warn!("the recorder did not finish within 10 s");
        }
        let _ = self.api.await;
    }
}

/// GOPs queued for the recorder before whole GOPs are dropped (about a
/// minute of video from 8 cameras at 1 s GOPs).
const RECORDER_QUEUE: usize = 512;

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
        "  recordings: {}",
        config.server.data_dir.join("recordings").display()
    );
    println!(
        "  HTTP API: curl -H \"Authorization: Bearer $(cat {})\" http://{}/api/v1/cameras",
        server.api_token.display(),
        server.api_addr
    );
    println!("  web app: {}/", server.web_url);
    if let Some(link) = &server.setup_link {
        println!("  first-run setup (one-time link, creates the admin account): {link}");
    }
    println!(
        "  allowed peers: {} (add a camera with: kodama-server allow add <camera-node-id>)",
        server.allowlist.list().map(|l| l.len()).unwrap_or(0)
    );
    cancel.cancelled().await;
    tracing::info!("shutting down");
    server.shutdown().await;
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
                if role == PeerRole::Camera {
                    "camera"
                } else {
                    "viewer"
                }
            );
        }
        AllowAction::List => {
            for p in list.list()? {
                let role = if p.role == PeerRole::Camera {
                    "camera"
                } else {
                    "viewer"
                };
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

/// `kodama-server token rotate`.
pub fn rotate_token(config: &Config) -> anyhow::Result<()> {
    let path = api::client::rotate_token(&config.server.data_dir, &config.api)?;
    println!("new API token written to {}", path.display());
    Ok(())
}

/// `kodama-server view …`.
pub async fn view(
    config: &Config,
    args: ViewArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(from) = &args.from {
        let to = args
            .to
            .as_deref()
            .context("--from needs --to (RFC 3339, e.g. 2026-11-25T10:00:00Z)")?;
        let (written_to, bytes) = api::client::view(
            &config.server.data_dir,
            &config.api,
            args.camera.as_deref(),
            from,
            to,
            args.output.as_deref(),
        )
        .await?;
        eprintln!("wrote {bytes} bytes of MP4 to {written_to}");
        return Ok(());
    }
    let key_path = args
        .key_path
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("viewer.key"));
    let secret = endpoint::load_or_create_key(&key_path)?;
    let server = if args.ticket.is_some() || args.server_id.is_some() {
        endpoint::dial_addr(
            args.ticket.as_deref(),
            args.server_id.as_deref(),
            &args.server_addr,
        )?
    } else {
        // The local server: whoever can read its data directory owns it, so
        // the viewer may put itself on the allowlist.
        let server_key = endpoint::load_or_create_key(&config.key_path())
            .context("no --ticket or --server-id given and no local server in --data-dir")?;
        let list = Allowlist::new(config.allowlist_path());
        if !list.allows(&secret.public(), Role::Viewer) {
            list.add(
                &secret.public().to_string(),
                PeerRole::Viewer,
                "local viewer",
            )?;
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
